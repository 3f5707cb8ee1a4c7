"""The SFTP path guard without sockets: what it holds, asks the target, releases and refuses.

A stand-in for the auditor's filter records what reaches it; the "target"
is a list of what the guard sent. The real thing, with sftp and sshd, is in
tests/e2e/test_file_transfer_machine.py.
"""

from __future__ import annotations

import struct

import pytest

from gateway.domain.transfer.policy import TransferMode, TransferPolicy
from gateway.ssh.transfer.events import Verdict
from gateway.ssh.transfer.sftp import PacketFramer, PacketType, StatusCode, frame
from gateway.ssh.transfer.sftp_paths import MAX_HELD_BYTES, SftpPathGuard

ROOT = "/srv/drop"


class Inner:
    """Passes everything; remembers what it saw and the verdicts the guard gave it."""

    def __init__(self) -> None:
        self.to_target_seen: list[bytes] = []
        self.to_client_seen: list[bytes] = []
        self.verdicts: list[Verdict] = []

    def to_target(self, data: bytes) -> bytes:
        self.to_target_seen.append(data)
        return data

    def to_client(self, data: bytes) -> bytes:
        self.to_client_seen.append(data)
        return data

    def finished(self) -> None:
        pass

    def apply(self, verdict: Verdict) -> bytes:
        self.verdicts.append(verdict)
        return verdict.forward


def s(value: bytes | str) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack(">I", len(raw)) + raw


def request(kind: PacketType, request_id: int, *paths: bytes | str, tail: bytes = b"") -> bytes:
    return frame(struct.pack(">BI", kind, request_id) + b"".join(s(p) for p in paths) + tail)


def opened(request_id: int, path: str) -> bytes:
    return request(PacketType.OPEN, request_id, path, tail=struct.pack(">II", 1, 0))


def name(request_id: int, path: bytes | str) -> bytes:
    return frame(struct.pack(">BII", PacketType.NAME, request_id, 1) + s(path) + s(path)
                 + struct.pack(">I", 0))  # fmt: skip


def status(request_id: int, code: int) -> bytes:
    return frame(struct.pack(">BII", PacketType.STATUS, request_id, code) + s("no") + s("en"))


def realpaths(sent: bytes) -> dict[int, bytes]:
    """The REALPATH requests in bytes the guard sent: id -> path."""
    asked = {}
    for body in PacketFramer().feed(sent):
        assert body[0] == PacketType.REALPATH
        (request_id,) = struct.unpack_from(">I", body, 1)
        (length,) = struct.unpack_from(">I", body, 5)
        asked[request_id] = body[9 : 9 + length]
    return asked


class Lab:
    def __init__(self, roots: tuple[str, ...] = (ROOT,)) -> None:
        self.inner = Inner()
        self.target: list[bytes] = []
        policy = TransferPolicy(TransferMode.ALLOW, "nhi:svc", paths=roots)
        self.guard = SftpPathGuard(self.inner, policy, self.target.append)

    def answer(self, asked: dict[int, bytes], where: dict[bytes, bytes | int]) -> bytes:
        """Answer every REALPATH: a resolved path, or a STATUS code."""
        replies = b"".join(
            status(i, answer) if isinstance(answer, int) else name(i, answer)
            for i, answer in ((i, where[path]) for i, path in asked.items())
        )  # fmt: skip
        return self.guard.to_client(replies)


def test_requests_without_paths_pass_and_path_requests_wait_for_the_target() -> None:
    lab = Lab()
    init = frame(struct.pack(">BI", PacketType.INIT, 3))
    assert lab.guard.to_target(init) == init
    open_request = opened(1, f"{ROOT}/in.csv")
    read = frame(struct.pack(">BI", PacketType.READ, 2) + s(b"h") + struct.pack(">QI", 0, 10))
    sent = lab.guard.to_target(open_request + read)
    asked = realpaths(sent)
    assert sorted(asked.values()) == [ROOT.encode(), f"{ROOT}/in.csv".encode()]
    assert open_request not in lab.inner.to_target_seen  # held, and the READ behind it
    to_client = lab.answer(
        asked, {ROOT.encode(): ROOT.encode(), f"{ROOT}/in.csv".encode(): f"{ROOT}/in.csv".encode()}
    )
    assert to_client == b""  # the target's answers are the gateway's, never the client's
    assert lab.target == [open_request, read]  # released in order
    # The allowed directory is resolved once.
    assert list(realpaths(lab.guard.to_target(opened(4, f"{ROOT}/b"))).values()) == [
        f"{ROOT}/b".encode()]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "resolved", "code", "reason"),
    [
        (
            f"{ROOT}/link/hostname",
            b"/etc/hostname",
            StatusCode.PERMISSION_DENIED,
            "resolves to '/etc/hostname'",
        ),
        (f"{ROOT}/link/../etc/shadow", b"/etc/shadow", StatusCode.PERMISSION_DENIED, "outside"),
        (f"{ROOT}/x", b"/srv/drop-other/x", StatusCode.PERMISSION_DENIED, "outside"),  # a prefix
        (
            f"{ROOT}/missing/x",
            StatusCode.NO_SUCH_FILE,
            StatusCode.NO_SUCH_FILE,
            "cannot be resolved",
        ),
    ],
)
def test_paths_resolving_outside_are_refused(
    path: str, resolved: bytes | int, code: int, reason: str
) -> None:
    lab = Lab()
    nxt = opened(9, f"{ROOT}/fine")
    asked = realpaths(lab.guard.to_target(opened(7, path) + nxt))
    lab.answer(asked, {ROOT.encode(): ROOT.encode(), path.encode(): resolved})
    [verdict] = lab.inner.verdicts
    assert struct.unpack_from(">BII", verdict.reply, 4) == (PacketType.STATUS, 7, code)
    assert reason in verdict.notices[0]
    [event] = verdict.events
    assert event.action == "file.refused" and event.details["path"] == path
    assert not lab.target or realpaths(lab.target[0])  # the next request gets its own check


def test_renames_check_both_paths() -> None:
    lab = Lab()
    rename = request(PacketType.RENAME, 5, f"{ROOT}/link", f"{ROOT}/moved")
    asked = realpaths(lab.guard.to_target(rename))
    assert sorted(asked.values()) == sorted(
        [ROOT.encode(), f"{ROOT}/link".encode(), f"{ROOT}/moved".encode()])  # fmt: skip
    lab.answer(asked, {ROOT.encode(): ROOT.encode(), f"{ROOT}/link".encode(): b"/etc",
                       f"{ROOT}/moved".encode(): f"{ROOT}/moved".encode()})  # fmt: skip
    assert lab.inner.verdicts and not lab.target
    posix = request(PacketType.EXTENDED, 6, "posix-rename@openssh.com", f"{ROOT}/a", "/etc/b")
    assert lab.guard.to_target(posix) == posix  # lexically outside: the auditor refuses it


def test_private_ids_never_collide_with_a_pending_client_request() -> None:
    lab = Lab()
    # The client uses the ids the guard would pick next, and waits for the replies.
    pending = [frame(struct.pack(">BI", PacketType.FSTAT, i) + s(b"h"))
               for i in (0xFFFF0001, 0xFFFF0002)]  # fmt: skip
    assert lab.guard.to_target(b"".join(pending)) == b"".join(pending)
    asked = realpaths(lab.guard.to_target(opened(3, f"{ROOT}/x")))
    assert not set(asked) & {0xFFFF0001, 0xFFFF0002}
    # The client's own reply with a private-looking id goes to the client, untouched.
    reply = status(0xFFFF0001, StatusCode.OK)
    assert lab.guard.to_client(reply) == reply


def test_relative_paths_and_the_whole_tree_need_no_check() -> None:
    lab = Lab()
    relative = opened(1, "in.csv")
    assert lab.guard.to_target(relative) == relative  # the auditor refuses it by name
    everything = Lab(roots=("/",))
    anywhere = opened(1, "/etc/hostname")
    assert everything.guard.to_target(anywhere) == anywhere


def test_a_client_flooding_while_a_check_waits_is_cut_off() -> None:
    lab = Lab()
    lab.guard.to_target(opened(1, f"{ROOT}/x"))
    write = frame(struct.pack(">BI", PacketType.WRITE, 2) + s(b"h") + struct.pack(">Q", 0)
                  + s(b"x" * 200_000))  # fmt: skip
    for _ in range(MAX_HELD_BYTES // len(write) + 1):
        lab.guard.to_target(write)
    assert lab.inner.verdicts and lab.inner.verdicts[-1].abort
    assert "while a path was being checked" in (lab.inner.verdicts[-1].abort or "")


def test_a_malformed_stream_goes_to_the_auditor_as_it_is() -> None:
    lab = Lab()
    lab.guard.to_target(opened(1, f"{ROOT}/x"))  # held
    hostile = b"\0\0\0\0"
    lab.guard.to_target(hostile)
    assert lab.inner.to_target_seen[-1].endswith(hostile)
    assert opened(1, f"{ROOT}/x") in lab.inner.to_target_seen[-1]
