"""The SFTP auditor against a hostile client and a hostile target, fed bytes directly.

Each test sends exactly the packets an attacker would: request ids reused
while outstanding, replies nobody asked for, handles never issued, reads
and writes past the cap in every open mode. And the clients whose complete
downloads used to lose their sha256 (pscp, asyncssh), packet for packet.
"""

from __future__ import annotations

import hashlib

import pytest

from gateway.domain.transfer.policy import TransferMode, TransferPolicy
from gateway.ssh.transfer.events import FileEvent, Verdict
from gateway.ssh.transfer.sftp import (
    Data,
    OpenFlags,
    PacketFramer,
    PacketType,
    Status,
    StatusCode,
    decode_response,
)
from gateway.ssh.transfer.sftp_auditor import SftpAuditor
from tests.support.sftp_wire import (
    attrs_reply,
    close_request,
    data_reply,
    fstat_request,
    handle_reply,
    init,
    mkdir_request,
    name_reply,
    open_request,
    packet,
    path_request,
    read_request,
    s,
    status_reply,
    version_reply,
    write_request,
)

ALLOW = TransferPolicy(TransferMode.ALLOW, "rule test")
CAP = 1000
CAPPED = TransferPolicy(TransferMode.ALLOW, "rule cap", max_bytes=CAP)
DOWN_CAPPED = TransferPolicy(TransferMode.DOWNLOAD_ONLY, "rule down", max_bytes=CAP)
UP = TransferPolicy(TransferMode.UPLOAD_ONLY, "rule up")
WRITE_NEW = OpenFlags.WRITE | OpenFlags.CREAT | OpenFlags.TRUNC
APPEND = OpenFlags.WRITE | OpenFlags.CREAT | OpenFlags.APPEND


def started(policy: TransferPolicy = ALLOW) -> SftpAuditor:
    auditor = SftpAuditor(policy)
    auditor.from_client(init())
    auditor.from_target(version_reply())
    return auditor


def opened(auditor: SftpAuditor, path: str, flags: OpenFlags, handle: bytes, rid: int) -> None:
    assert auditor.from_client(open_request(rid, path, flags)).forward
    verdict = auditor.from_target(handle_reply(rid, handle))
    assert [e.action for e in verdict.events] == ["file.opened"], verdict


def replies(verdict: Verdict) -> list[object]:
    return [decode_response(body) for body in PacketFramer().feed(verdict.reply + verdict.forward)]


def violation(verdict: Verdict) -> str:
    assert verdict.abort, verdict
    [event] = [e for e in verdict.events if e.details.get("operation") == "protocol"]
    assert event.action == "file.refused" and event.reason == verdict.abort
    return verdict.abort


def closed_events(events: list[FileEvent]) -> list[dict[str, object]]:
    return [e.details for e in events if e.action == "file.closed"]


# -- request ids, replies, handles -------------------------------------------------------


def test_reusing_an_outstanding_request_id_for_a_decoy_ends_the_channel() -> None:
    """The issue's download case: OPEN of a decoy and of the real file under one id."""
    auditor = started(DOWN_CAPPED)
    verdict = auditor.from_client(
        open_request(7, "/etc/hostname", OpenFlags.READ) + open_request(7, "/big", OpenFlags.READ)
    )
    assert "request id 7 reused while outstanding" in violation(verdict)
    # The decoy went before the violation; the real OPEN never reached the target.
    assert verdict.forward == open_request(7, "/etc/hostname", OpenFlags.READ)
    # Nothing more passes, either way.
    assert auditor.from_target(handle_reply(7, b"H")).forward == b""
    assert auditor.from_client(read_request(8, b"H", 0, 100)).forward == b""


def test_reusing_an_id_for_a_mkdir_ends_the_channel_before_it_is_hidden() -> None:
    """The issue's upload case: OPEN, then MKDIR under the OPEN's id."""
    auditor = started(UP)
    verdict = auditor.from_client(
        open_request(3, "/srv/drop/a", WRITE_NEW) + mkdir_request(3, "/srv/drop/hidden")
    )
    assert "request id 3 reused" in violation(verdict)
    assert verdict.forward == open_request(3, "/srv/drop/a", WRITE_NEW)


def test_an_id_may_be_reused_once_answered() -> None:
    """pscp recycles its ids: that is allowed once the earlier request has its reply."""
    auditor = started()
    opened(auditor, "/f", OpenFlags.READ, b"H", 256)
    assert auditor.from_client(read_request(256, b"H", 0, 10)).forward
    assert not auditor.from_target(data_reply(256, b"x" * 10)).abort


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (status_reply(99, StatusCode.OK), "request id 99, which is not outstanding"),
        (handle_reply(99, b"X"), "request id 99, which is not outstanding"),
        (data_reply(5, b"leak"), "a DATA reply to a STAT request"),
        (handle_reply(5, b"X"), "a HANDLE reply to a STAT request"),
        (version_reply(), "a VERSION that answers no INIT"),
    ],
)
def test_a_reply_that_answers_nothing_asked_ends_the_channel(reply: bytes, problem: str) -> None:
    auditor = started()
    auditor.from_client(path_request(PacketType.STAT, 5, "/etc/hostname"))
    verdict = auditor.from_target(reply)
    assert problem in violation(verdict)
    assert verdict.forward == b""  # never forwarded unchecked


def test_requests_on_handles_the_target_did_not_issue_end_the_channel() -> None:
    auditor = started(CAPPED)
    verdict = auditor.from_client(
        open_request(1, "/f", APPEND) + write_request(2, b"\x00\x00\x00\x00", 0, b"x" * 10)
    )
    assert "request id 2 names a handle the target has not issued" in violation(verdict)
    # A handle being closed cannot be used either.
    auditor = started()
    opened(auditor, "/f", OpenFlags.READ, b"H", 1)
    verdict = auditor.from_client(close_request(2, b"H") + read_request(3, b"H", 0, 10))
    assert "names a handle the target has not issued (or is closing)" in violation(verdict)


def test_handles_are_of_one_kind_and_issued_once() -> None:
    auditor = started()
    auditor.from_client(path_request(PacketType.OPENDIR, 1, "/srv"))
    auditor.from_target(handle_reply(1, b"D"))
    assert "wrong kind" in violation(auditor.from_client(read_request(2, b"D", 0, 10)))
    auditor = started()
    opened(auditor, "/f", OpenFlags.READ, b"H", 1)
    auditor.from_client(open_request(2, "/g", OpenFlags.READ))
    assert "issued a handle that is still open" in violation(
        auditor.from_target(handle_reply(2, b"H"))
    )


def test_the_conversation_starts_with_init_and_speaks_version_3() -> None:
    before = SftpAuditor(ALLOW).from_client(path_request(PacketType.STAT, 1, "/"))
    assert "a request before INIT" in violation(before)
    auditor = SftpAuditor(ALLOW)
    assert "a second INIT" in violation(auditor.from_client(init() + init()))
    auditor = SftpAuditor(ALLOW)
    auditor.from_client(init(6))
    assert "only version 3 is audited" in violation(auditor.from_target(version_reply(6)))
    # An extension that would switch versions under the parser is answered by the gateway.
    auditor = started()
    verdict = auditor.from_client(packet(PacketType.EXTENDED, 2, s("version-select") + s("6")))
    assert verdict.forward == b"" and "SFTP 3 only" in verdict.reply.decode("latin-1")


def test_data_longer_than_asked_for_ends_the_channel() -> None:
    auditor = started()
    opened(auditor, "/f", OpenFlags.READ, b"H", 1)
    auditor.from_client(read_request(2, b"H", 0, 10))
    assert "more data than request id 2 asked for" in violation(
        auditor.from_target(data_reply(2, b"y" * 11))
    )


def test_a_handle_is_used_only_the_way_it_was_opened() -> None:
    auditor = started()
    opened(auditor, "/read-only", OpenFlags.READ, b"R", 1)
    opened(auditor, "/write-only", WRITE_NEW, b"W", 2)
    refused = auditor.from_client(write_request(3, b"R", 0, b"x"))
    assert refused.forward == b"" and "not opened for writing" in refused.events[0].reason
    refused = auditor.from_client(read_request(4, b"W", 0, 10))
    assert refused.forward == b"" and "not opened for reading" in refused.events[0].reason


# -- the cap, in every open mode ------------------------------------------------------------


def write(auditor: SftpAuditor, rid: int, handle: bytes, offset: int, size: int) -> Verdict:
    verdict = auditor.from_client(write_request(rid, handle, offset, b"w" * size))
    if verdict.forward:
        auditor.from_target(status_reply(rid, StatusCode.OK))
    return verdict


def test_writes_at_one_offset_count_against_the_handle() -> None:
    auditor = started(CAPPED)
    opened(auditor, "/f", APPEND, b"H", 1)
    assert write(auditor, 2, b"H", 0, CAP).forward
    refused = write(auditor, 3, b"H", 0, CAP)
    assert refused.forward == b"" and [e.action for e in refused.events] == ["file.refused"]
    again = write(auditor, 4, b"H", 0, 1)  # refused every time, audited once per handle
    assert again.forward == b"" and again.events == [] and again.reply


def test_reopening_the_same_file_does_not_reset_its_count() -> None:
    auditor = started(CAPPED)
    opened(auditor, "/srv/f", APPEND, b"A", 1)
    assert write(auditor, 2, b"A", 0, 600).forward
    opened(auditor, "/srv/./f", APPEND, b"B", 3)  # the same file, named differently
    assert write(auditor, 4, b"B", 0, 400).forward
    assert write(auditor, 5, b"B", 0, 1).forward == b""
    # Another file has its own count.
    opened(auditor, "/srv/g", APPEND, b"C", 6)
    assert write(auditor, 7, b"C", 0, CAP).forward


def test_no_byte_is_written_or_read_at_or_past_the_cap() -> None:
    auditor = started(CAPPED)
    opened(auditor, "/f", OpenFlags.WRITE | OpenFlags.CREAT, b"W", 1)
    assert write(auditor, 2, b"W", CAP, 1).forward == b""  # a write past the cap, at an offset
    assert write(auditor, 3, b"W", CAP - 10, 10).forward
    opened(auditor, "/big", OpenFlags.READ, b"R", 4)
    auditor.from_client(read_request(5, b"R", CAP * 5, 100))  # read far past the cap
    [reply] = replies(auditor.from_target(data_reply(5, b"r" * 100)))
    assert isinstance(reply, Status) and reply.code == StatusCode.PERMISSION_DENIED


def test_reads_through_several_handles_share_the_count() -> None:
    auditor = started(DOWN_CAPPED)
    for number, handle in enumerate((b"A", b"B")):
        opened(auditor, "/big", OpenFlags.READ, handle, 10 * number + 1)
    auditor.from_client(read_request(2, b"A", 0, 700) + read_request(12, b"B", 0, 700))
    verdict = auditor.from_target(data_reply(2, b"a" * 700) + data_reply(12, b"b" * 700))
    first, second = replies(verdict)
    assert first == Data(2, b"a" * 700) and second == Data(12, b"b" * 300)


def test_a_handle_for_reading_and_writing_is_capped_both_ways() -> None:
    auditor = started(CAPPED)
    opened(auditor, "/f", OpenFlags.READ | OpenFlags.WRITE, b"H", 1)
    assert write(auditor, 2, b"H", 0, CAP).forward
    assert write(auditor, 3, b"H", 0, 1).forward == b""
    auditor.from_client(read_request(4, b"H", 0, CAP))
    [reply] = replies(auditor.from_target(data_reply(4, b"r" * CAP)))
    assert reply == Data(4, b"r" * CAP)
    auditor.from_client(close_request(5, b"H"))
    [closed] = closed_events(auditor.from_target(status_reply(5, StatusCode.OK)).events)
    assert closed["bytes"] == 2 * CAP and closed["complete"] is False


# -- completeness: the sha256 of a whole file, whatever the client ---------------------------


def test_pscp_reading_ahead_past_the_end_gets_the_sha256() -> None:
    """pscp: STAT, OPEN, reads far beyond the size; a short read; EOF for the rest."""
    content = bytes(range(256)) * 10  # 2560 bytes
    auditor = started()
    auditor.from_client(path_request(PacketType.STAT, 256, "/f"))
    auditor.from_target(attrs_reply(256, len(content)))
    opened(auditor, "/f", OpenFlags.READ, b"H", 256)
    auditor.from_client(b"".join(read_request(300 + i, b"H", i * 1024, 1024) for i in range(6)))
    stream = b""
    for i in range(6):
        piece = content[i * 1024 : (i + 1) * 1024]
        stream += data_reply(300 + i, piece) if piece else status_reply(300 + i, StatusCode.EOF)
    auditor.from_target(stream)
    auditor.from_client(close_request(256, b"H"))
    [closed] = closed_events(auditor.from_target(status_reply(256, StatusCode.OK)).events)
    assert closed["sha256"] == hashlib.sha256(content).hexdigest() and closed["complete"]


def test_asyncssh_stopping_at_the_size_from_lstat_gets_the_sha256() -> None:
    auditor = started()
    auditor.from_client(path_request(PacketType.LSTAT, 1, "/f"))
    auditor.from_target(attrs_reply(1, 3000))
    opened(auditor, "/f", OpenFlags.READ, b"H", 2)
    auditor.from_client(read_request(3, b"H", 0, 2000) + read_request(4, b"H", 2000, 1000))
    auditor.from_target(data_reply(3, b"a" * 2000) + data_reply(4, b"b" * 1000))
    auditor.from_client(close_request(5, b"H"))
    [closed] = closed_events(auditor.from_target(status_reply(5, StatusCode.OK)).events)
    assert (
        closed["complete"]
        and closed["sha256"] == hashlib.sha256(b"a" * 2000 + b"b" * 1000).hexdigest()
    )


def test_a_size_that_is_not_a_regular_files_is_not_trusted() -> None:
    auditor = started()
    auditor.from_client(path_request(PacketType.LSTAT, 1, "/link"))
    auditor.from_target(attrs_reply(1, 10, mode=0o120777))  # a symlink's own size
    opened(auditor, "/link", OpenFlags.READ, b"H", 2)
    auditor.from_client(read_request(3, b"H", 0, 10))
    auditor.from_target(data_reply(3, b"/etc/passw"))
    auditor.from_client(close_request(4, b"H"))
    [closed] = closed_events(auditor.from_target(status_reply(4, StatusCode.OK)).events)
    assert closed["complete"] is False and closed["sha256"] is None


def test_fstat_size_and_replies_out_of_order() -> None:
    """Replies may come in any order: chunks wait for their turn to be hashed."""
    content = b"0123456789" * 300
    auditor = started()
    opened(auditor, "/f", OpenFlags.READ, b"H", 1)
    auditor.from_client(fstat_request(2, b"H"))
    auditor.from_target(attrs_reply(2, len(content)))
    auditor.from_client(b"".join(read_request(10 + i, b"H", i * 1000, 1000) for i in range(3)))
    auditor.from_target(
        data_reply(12, content[2000:]) + data_reply(10, content[:1000])
        + data_reply(11, content[1000:2000])
    )  # fmt: skip
    auditor.from_client(close_request(20, b"H"))
    [closed] = closed_events(auditor.from_target(status_reply(20, StatusCode.OK)).events)
    assert closed["sha256"] == hashlib.sha256(content).hexdigest() and closed["complete"]


def test_a_close_answered_before_a_read_waits_for_that_read() -> None:
    auditor = started()
    opened(auditor, "/f", OpenFlags.READ, b"H", 1)
    auditor.from_client(read_request(2, b"H", 0, 100) + close_request(3, b"H"))
    early = auditor.from_target(status_reply(3, StatusCode.OK))
    assert closed_events(early.events) == []
    [closed] = closed_events(auditor.from_target(data_reply(2, b"z" * 100)).events)
    assert closed["bytes"] == 100
    assert auditor.finish() == []


def test_eof_elsewhere_than_the_end_of_the_run_is_no_proof() -> None:
    auditor = started()
    opened(auditor, "/f", OpenFlags.READ, b"H", 1)
    auditor.from_client(read_request(2, b"H", 0, 100) + read_request(3, b"H", 200, 100))
    auditor.from_target(data_reply(2, b"q" * 50) + status_reply(3, StatusCode.EOF))
    auditor.from_client(close_request(4, b"H"))
    [closed] = closed_events(auditor.from_target(status_reply(4, StatusCode.OK)).events)
    assert closed["complete"] is False


def test_names_and_listings_pass_untouched() -> None:
    auditor = started(DOWN_CAPPED)
    auditor.from_client(path_request(PacketType.REALPATH, 1, "."))
    verdict = auditor.from_target(name_reply(1, "/root"))
    assert verdict.forward == name_reply(1, "/root") and not verdict.events
