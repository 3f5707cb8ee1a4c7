"""The SFTP parser and the file-transfer auditors, fed bytes directly (no sockets)."""

from __future__ import annotations

import hashlib
import struct

import pytest
from pydantic import ValidationError

from gateway.config import RuleSettings
from gateway.domain.transfer.commands import ExecTransfer, classify_exec
from gateway.domain.transfer.policy import (
    Direction,
    TransferMode,
    TransferPolicy,
    forward_allowed,
    transfer_policy_of_rule,
)
from gateway.ssh.transfer.sftp import (
    MAX_PACKET_LENGTH,
    Data,
    Open,
    OpenFlags,
    PacketFramer,
    PacketType,
    Rename,
    SftpProtocolError,
    Status,
    StatusCode,
    decode_request,
    decode_response,
    encode_status,
)
from gateway.ssh.transfer.sftp_auditor import MAX_PENDING_REQUESTS, SftpAuditor
from gateway.ssh.transfer.stream_auditors import ScpAuditor, StreamAuditor
from tests.support.sftp_wire import (
    data_reply,
    handle_reply,
    init,
    open_request,
    packet,
    read_request,
    s,
    status_reply,
    version_reply,
    write_request,
)

ALLOW = TransferPolicy(TransferMode.ALLOW, "rule test")


def started(policy: TransferPolicy) -> SftpAuditor:
    """An auditor past the INIT / VERSION exchange."""
    auditor = SftpAuditor(policy)
    assert auditor.from_client(init()).forward == init()
    assert auditor.from_target(version_reply()).forward == version_reply()
    return auditor


# -- framing and decoding --------------------------------------------------------------


def test_framer_reassembles_packets_split_anywhere() -> None:
    stream = open_request(1, "/etc/hosts", OpenFlags.READ) + read_request(2, b"h", 0, 10)
    for cut in range(len(stream) + 1):
        framer = PacketFramer()
        bodies = framer.feed(stream[:cut]) + framer.feed(stream[cut:])
        assert [decode_request(b).id for b in bodies] == [1, 2]  # type: ignore[union-attr]
        assert framer.pending == 0


@pytest.mark.parametrize("length", [0, MAX_PACKET_LENGTH + 1, 0xFFFFFFFF])
def test_framer_refuses_bad_lengths_before_buffering(length: int) -> None:
    with pytest.raises(SftpProtocolError, match="outside"):
        PacketFramer().feed(struct.pack(">I", length) + b"\x03")


@pytest.mark.parametrize(
    "body",
    [
        bytes([PacketType.OPEN]) + struct.pack(">I", 1),  # no path
        bytes([PacketType.OPEN]) + struct.pack(">II", 1, 1000) + b"abc",  # path runs past the end
        bytes([PacketType.WRITE]) + struct.pack(">I", 1) + s(b"h") + b"\x00\x00",  # short offset
        bytes([99]) + struct.pack(">I", 1),  # no such request type
        b"",
    ],
)
def test_truncated_or_garbage_requests_are_protocol_errors(body: bytes) -> None:
    with pytest.raises(SftpProtocolError):
        decode_request(body)


def test_decodes_requests_and_replies() -> None:
    [body] = PacketFramer().feed(open_request(7, "/srv/a b", OpenFlags.WRITE | OpenFlags.CREAT))
    assert decode_request(body) == Open(7, "/srv/a b", OpenFlags.WRITE | OpenFlags.CREAT,
                                        decode_request(body).attrs)  # type: ignore[union-attr]  # fmt: skip
    posix = packet(PacketType.EXTENDED, 3, s("posix-rename@openssh.com") + s("/a") + s("/b"))
    assert decode_request(posix[4:]) == Rename(3, "/a", "/b", posix=True)
    assert decode_response(data_reply(4, b"xyz")[4:]) == Data(4, b"xyz")
    reply = decode_response(encode_status(5, StatusCode.PERMISSION_DENIED, "no")[4:])
    assert reply == Status(5, StatusCode.PERMISSION_DENIED, "no")


# -- the SFTP auditor -------------------------------------------------------------------


def download(auditor: SftpAuditor, content: bytes, chunk: int = 1000) -> list[str]:
    """Drive a whole download through the auditor; the actions it emitted."""
    actions = []
    verdict = auditor.from_client(open_request(1, "/data/file", OpenFlags.READ))
    assert verdict.forward
    actions += [e.action for e in auditor.from_target(handle_reply(1, b"H")).events]
    offset, request_id = 0, 2
    while True:
        auditor.from_client(read_request(request_id, b"H", offset, chunk))
        piece = content[offset : offset + chunk]
        reply = data_reply(request_id, piece) if piece else status_reply(request_id, StatusCode.EOF)
        actions += [e.action for e in auditor.from_target(reply).events]
        request_id += 1
        if not piece:
            break
        offset += len(piece)
    auditor.from_client(packet(PacketType.CLOSE, request_id, s(b"H")))
    verdict = auditor.from_target(status_reply(request_id, StatusCode.OK))
    actions += [e.action for e in verdict.events]
    return actions


def test_whole_sequential_download_gets_its_sha256() -> None:
    content = bytes(range(256)) * 30
    auditor = started(ALLOW)
    actions = download(auditor, content)
    assert actions == ["file.opened", "file.closed"]


def test_closed_event_details() -> None:
    content = b"x" * 4321
    auditor = started(ALLOW)
    auditor.from_client(open_request(1, "/f", OpenFlags.READ))
    auditor.from_target(handle_reply(1, b"H"))
    auditor.from_client(read_request(2, b"H", 0, 10_000))
    auditor.from_target(data_reply(2, content))
    auditor.from_client(read_request(3, b"H", 4321, 10_000))
    auditor.from_target(status_reply(3, StatusCode.EOF))
    auditor.from_client(packet(PacketType.CLOSE, 4, s(b"H")))
    [closed] = auditor.from_target(status_reply(4, StatusCode.OK)).events
    assert closed.details["sha256"] == hashlib.sha256(content).hexdigest()
    assert (closed.details["bytes"], closed.details["complete"]) == (4321, True)


def test_download_without_eof_or_out_of_order_has_no_hash() -> None:
    auditor = started(ALLOW)
    auditor.from_client(open_request(1, "/f", OpenFlags.READ))
    auditor.from_target(handle_reply(1, b"H"))
    auditor.from_client(read_request(2, b"H", 100, 10))
    auditor.from_target(data_reply(2, b"y" * 10))
    [interrupted] = auditor.finish()
    assert interrupted.outcome == "interrupted"
    assert interrupted.details["complete"] is False and interrupted.details["sha256"] is None


def test_upload_with_truncate_is_complete() -> None:
    auditor = started(ALLOW)
    auditor.from_client(open_request(1, "/up", OpenFlags.WRITE | OpenFlags.CREAT | OpenFlags.TRUNC))
    auditor.from_target(handle_reply(1, b"H"))
    auditor.from_client(write_request(2, b"H", 0, b"hello "))
    auditor.from_client(write_request(3, b"H", 6, b"world"))
    auditor.from_target(status_reply(2, StatusCode.OK) + status_reply(3, StatusCode.OK))
    auditor.from_client(packet(PacketType.CLOSE, 4, s(b"H")))
    [closed] = auditor.from_target(status_reply(4, StatusCode.OK)).events
    assert closed.details["sha256"] == hashlib.sha256(b"hello world").hexdigest()
    assert closed.details["direction"] == "upload"


def test_download_only_answers_uploads_itself() -> None:
    policy = TransferPolicy(TransferMode.DOWNLOAD_ONLY, "rule ro")
    auditor = started(policy)
    verdict = auditor.from_client(open_request(9, "/etc/passwd", OpenFlags.WRITE))
    assert verdict.forward == b""
    reply = decode_response(verdict.reply[4:])
    assert isinstance(reply, Status) and reply.code == StatusCode.PERMISSION_DENIED
    assert "rule ro allows file transfer download-only" in reply.message
    assert [e.action for e in verdict.events] == ["file.refused"]
    remove = packet(PacketType.REMOVE, 10, s("/etc/passwd"))
    assert auditor.from_client(remove).forward == b""


def test_read_cap_truncates_then_refuses() -> None:
    auditor = started(TransferPolicy(TransferMode.ALLOW, "rule cap", max_bytes=1500))
    auditor.from_client(open_request(1, "/big", OpenFlags.READ))
    auditor.from_target(handle_reply(1, b"H"))
    auditor.from_client(read_request(2, b"H", 0, 1000) + read_request(3, b"H", 1000, 1000))
    auditor.from_client(read_request(4, b"H", 2000, 1000))
    verdict = auditor.from_target(
        data_reply(2, b"a" * 1000) + data_reply(3, b"b" * 1000) + data_reply(4, b"c" * 1000)
    )
    replies = [decode_response(b) for b in PacketFramer().feed(verdict.forward)]
    assert replies[0] == Data(2, b"a" * 1000) and replies[1] == Data(3, b"b" * 500)
    assert isinstance(replies[2], Status) and replies[2].code == StatusCode.PERMISSION_DENIED
    assert [e.action for e in verdict.events] == ["file.refused"]


def test_hostile_streams_abort_the_channel() -> None:
    auditor = started(ALLOW)
    verdict = auditor.from_client(struct.pack(">I", MAX_PACKET_LENGTH * 4) + b"\x05")
    assert verdict.abort and "SFTP protocol violation by the client" in verdict.abort
    assert [e.action for e in verdict.events] == ["file.refused"]
    assert auditor.from_client(open_request(1, "/x", OpenFlags.READ)).forward == b""
    # Requests the auditor must remember (reads of an open file) are bounded too.
    flood = started(ALLOW)
    flood.from_client(open_request(1, "/f", OpenFlags.READ))
    flood.from_target(handle_reply(1, b"H"))
    stream = b"".join(read_request(i, b"H", 0, 1) for i in range(2, MAX_PENDING_REQUESTS + 3))
    assert flood.from_client(stream).abort


def test_path_scope_refuses_outside_paths() -> None:
    policy = TransferPolicy(TransferMode.ALLOW, "nhi:ci", paths=("/srv/drop",))
    auditor = started(policy)
    inside = auditor.from_client(open_request(1, "/srv/drop/a.txt", OpenFlags.READ))
    assert inside.forward and not inside.reply
    for path in ("/etc/shadow", "/srv/drop/../../etc/shadow", "relative.txt", "/srv/dropped"):
        outside = auditor.from_client(open_request(2, path, OpenFlags.READ))
        assert outside.reply and not outside.forward, path
    rename = packet(PacketType.RENAME, 3, s("/srv/drop/a") + s("/tmp/a"))
    assert auditor.from_client(rename).reply


# -- legacy scp and rsync ---------------------------------------------------------


def test_scp_stream_gives_names_sizes_and_hashes() -> None:
    transfer = classify_exec("scp -r -t /tmp/in")
    assert isinstance(transfer, ExecTransfer) and transfer.direction == Direction.UPLOAD
    auditor = ScpAuditor(ALLOW, transfer)
    stream = b"D0755 0 dir\nC0644 5 a.txt\nhello\x00C0600 0 empty\nE\n"
    events = []
    for i in range(len(stream)):  # byte by byte: every split point
        verdict = auditor.data(stream[i : i + 1])
        assert verdict.forward == stream[i : i + 1]
        events += verdict.events
    closed = [e.details for e in events if e.action == "file.closed"]
    assert [c["path"] for c in closed] == ["dir/a.txt", "dir/empty"]
    assert closed[0]["sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert auditor.finish() == []


def test_scp_cut_midway_and_garbage() -> None:
    transfer = classify_exec("scp -f /etc/hosts")
    assert isinstance(transfer, ExecTransfer) and transfer.direction == Direction.DOWNLOAD
    auditor = ScpAuditor(ALLOW, transfer)
    auditor.data(b"C0644 100 hosts\n" + b"z" * 40)
    [cut] = auditor.finish()
    assert cut.outcome == "interrupted" and cut.details["bytes"] == 40
    assert cut.details["complete"] is False
    assert ScpAuditor(ALLOW, transfer).data(b"Xnot scp\n").abort
    assert ScpAuditor(ALLOW, transfer).data(b"C0644 12 ../../etc/passwd\n").abort
    capped = TransferPolicy(TransferMode.ALLOW, "rule cap", max_bytes=10)
    assert ScpAuditor(capped, transfer).data(b"C0644 11 big\n").abort


def test_rsync_stream_is_counted_against_the_cap() -> None:
    transfer = classify_exec("rsync --server --sender -logDtpre.iLsfxCIvu . /srv/x")
    assert isinstance(transfer, ExecTransfer) and transfer.direction == Direction.DOWNLOAD
    assert transfer.paths == ("/srv/x",)
    auditor = StreamAuditor(TransferPolicy(TransferMode.ALLOW, "rule r", 100), transfer, "rsync")
    assert [e.action for e in auditor.data(b"a" * 60).events] == ["file.opened"]
    over = auditor.data(b"b" * 60)
    assert over.abort and over.forward == b""


# -- rule settings ---------------------------------------------------------------------


def rule(**settings: object) -> RuleSettings:
    return RuleSettings(id="r1", groups=["ops"], targets=["web01"], mode="allow", **settings)  # type: ignore[arg-type]


def test_rule_settings_default_to_no_transfer_and_no_forwarding() -> None:
    policy = transfer_policy_of_rule(rule())
    assert policy.mode == TransferMode.DENY and not policy.allows_any
    assert transfer_policy_of_rule(None).mode == TransferMode.DENY
    assert not forward_allowed(rule(), "db01", 5432)
    listed = rule(forward_local=["DB01:5432"], file_transfer="upload-only")
    assert forward_allowed(listed, "db01", 5432) and not forward_allowed(listed, "db01", 5433)
    up = transfer_policy_of_rule(listed)
    assert up.allows(Direction.UPLOAD) and not up.allows(Direction.DOWNLOAD)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"forward_local": ["db01"]}, "is not HOST:PORT"),
        ({"forward_local": ["db01:99999"]}, "is not HOST:PORT"),
        ({"file_transfer": "sometimes"}, "file_transfer"),
        ({"file_transfer_max_bytes": 0}, "file_transfer_max_bytes"),
    ],
)
def test_bad_rule_settings_are_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        rule(**settings)
