"""The SFTP and scp auditors, fuzzed with hypothesis against a model of each protocol.

SFTP: a hostile client (request ids drawn from a handful, so reused while
outstanding; handles guessed or stale; reads and writes at any offset in
every open mode) talks through the auditor to a model of OpenSSH's
sftp-server that answers in any order, sometimes with replies nobody asked
for; both streams are cut at random points. scp: streams of files,
directories, times, warnings and garbage, cut anywhere.

Whatever happens (refusals, violations, a channel cut with files open),
after the channel closes:

- every file byte that crossed the gateway is accounted to a ``file.*``
  event (the sum of ``file.closed`` bytes is what crossed);
- no cap is exceeded: per handle, per file in the session, by position;
- no reply reaches the client that answers no outstanding request, and
  nothing passes once the auditor has closed the channel.

The number of examples follows the reliability suite's size (CI or full).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.domain.transfer.commands import ExecTransfer
from gateway.domain.transfer.modes import Direction, TransferMode
from gateway.domain.transfer.policy import TransferPolicy
from gateway.ssh.transfer.events import FileEvent, Verdict
from gateway.ssh.transfer.sftp import (
    Close,
    Data,
    Handle,
    HandleRequest,
    Init,
    Open,
    OpenFlags,
    Other,
    PacketFramer,
    PacketType,
    Read,
    Request,
    StatusCode,
    Write,
    decode_request,
    decode_response,
)
from gateway.ssh.transfer.sftp_auditor import SftpAuditor
from gateway.ssh.transfer.stream_auditors import ScpAuditor
from tests.support.reliability import SIZE
from tests.support.sftp_wire import (
    attrs_reply,
    close_request,
    data_reply,
    fstat_request,
    handle_reply,
    init,
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

FUZZ = settings(
    max_examples=SIZE.fuzz_examples,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CAP = 300
#: sftp-server reads at most this much at once here: longer reads come back short.
SHORT_READ = 200
POLICIES = [
    TransferPolicy(TransferMode.ALLOW, "rule open"),
    TransferPolicy(TransferMode.ALLOW, "rule capped", max_bytes=CAP),
    TransferPolicy(TransferMode.DOWNLOAD_ONLY, "rule down", max_bytes=CAP),
    TransferPolicy(TransferMode.UPLOAD_ONLY, "rule up", max_bytes=CAP),
]
FLAGS = [
    OpenFlags.READ,
    OpenFlags.WRITE | OpenFlags.CREAT | OpenFlags.TRUNC,
    OpenFlags.WRITE | OpenFlags.CREAT | OpenFlags.APPEND,
    OpenFlags.WRITE | OpenFlags.CREAT,
    OpenFlags.READ | OpenFlags.WRITE,
    OpenFlags.READ | OpenFlags.WRITE | OpenFlags.APPEND,
]


def cut(data: bytes, draw: Any) -> list[bytes]:
    """``data`` in pieces, cut where hypothesis says."""
    points = sorted(draw(st.lists(st.integers(0, len(data)), max_size=3)))
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


# -- a model of OpenSSH's sftp-server --------------------------------------------------------


@dataclass
class _Opened:
    """One open of a file on the model target (handles are reused, opens are not)."""

    path: str
    flags: OpenFlags | None  # None: a directory


@dataclass
class ModelTarget:
    """Answers requests as sftp-server does, in order; the replies wait to be delivered."""

    files: dict[str, bytearray]
    handles: dict[int, _Opened] = field(default_factory=dict)
    queue: list[bytes] = field(default_factory=list)

    def receive(self, requests: list[Request]) -> None:
        self.queue += [self._answer(request) for request in requests]

    def opened(self, handle: bytes) -> _Opened | None:
        return self.handles.get(int.from_bytes(handle, "big")) if len(handle) == 4 else None

    def _issue(self, opened: _Opened) -> bytes:
        number = min(set(range(len(self.handles) + 1)) - set(self.handles))
        self.handles[number] = opened
        return number.to_bytes(4, "big")

    def _answer(self, request: Request) -> bytes:
        if isinstance(request, Init):
            return version_reply()
        rid = request.id
        if isinstance(request, Open):
            path, flags = posixpath.normpath(request.path), request.flags
            if path not in self.files and not flags & OpenFlags.CREAT:
                return status_reply(rid, StatusCode.NO_SUCH_FILE)
            content = self.files.setdefault(path, bytearray())
            if flags & OpenFlags.TRUNC:
                content.clear()
            return handle_reply(rid, self._issue(_Opened(path, flags)))
        if isinstance(request, Other) and request.type == PacketType.OPENDIR:
            return handle_reply(rid, self._issue(_Opened(request.path or "/", None)))
        if isinstance(request, (Read, Write, Close, HandleRequest)):
            opened = self.opened(request.handle)
            if opened is None:
                return status_reply(rid, StatusCode.FAILURE)
            if isinstance(request, Close):
                del self.handles[int.from_bytes(request.handle, "big")]
                return status_reply(rid, StatusCode.OK)
            if isinstance(request, HandleRequest):
                if request.type == PacketType.READDIR:
                    return name_reply(rid, "x")
                return attrs_reply(rid, len(self.files.get(opened.path, b"")))
            if opened.flags is None:
                return status_reply(rid, StatusCode.FAILURE)
            content = self.files[opened.path]
            if isinstance(request, Read):
                piece = bytes(content[request.offset : request.offset + request.length])
                if not piece:
                    return status_reply(rid, StatusCode.EOF)
                return data_reply(rid, piece[:SHORT_READ])
            if not opened.flags & OpenFlags.WRITE:
                return status_reply(rid, StatusCode.PERMISSION_DENIED)
            if opened.flags & OpenFlags.APPEND:
                content += request.data
            else:
                end = request.offset + len(request.data)
                content.extend(b"\0" * max(0, end - len(content)))
                content[request.offset : end] = request.data
            return status_reply(rid, StatusCode.OK)
        if isinstance(request, Other) and request.type in (PacketType.STAT, PacketType.LSTAT):
            path = posixpath.normpath(request.path or "")
            if path not in self.files:
                return status_reply(rid, StatusCode.NO_SUCH_FILE)
            return attrs_reply(rid, len(self.files[path]))
        return status_reply(rid, StatusCode.OK)


# -- one run: what crossed, checked as it crosses ------------------------------------------


@dataclass
class FuzzRun:
    """What crossed the gateway, as the client and target see the wire, checked as it crosses."""

    policy: TransferPolicy
    auditor: SftpAuditor
    events: list[FileEvent] = field(default_factory=list)
    crossed: int = 0
    #: Opens in flight (request id -> path, flags), open handles, reads in flight.
    opening: dict[int, _Opened] = field(default_factory=dict)
    handles: dict[bytes, _Opened] = field(default_factory=dict)
    reads: dict[int, tuple[_Opened, int]] = field(default_factory=dict)
    #: Bytes that crossed per open (per handle) and per file, each direction.
    per_open: dict[tuple[int, Direction], int] = field(default_factory=dict)
    per_file: dict[tuple[str, Direction], int] = field(default_factory=dict)
    #: Requests forwarded to the target and not yet answered to the client.
    outstanding: set[int] = field(default_factory=set)
    aborted: bool = False

    def note(self, verdict: Verdict) -> None:
        assert not (self.aborted and verdict.forward), "bytes passed after the channel closed"
        self.events += verdict.events
        self.aborted = self.aborted or bool(verdict.abort)

    def forwarded_requests(self, data: bytes) -> list[Request]:
        """Requests the auditor passed: ids now outstanding; a write's bytes crossed."""
        requests = [decode_request(body) for body in PacketFramer().feed(data)]
        for request in requests:
            if isinstance(request, Init):
                continue
            assert request.id not in self.outstanding, "an id forwarded twice while outstanding"
            self.outstanding.add(request.id)
            if isinstance(request, Open):
                self.opening[request.id] = _Opened(posixpath.normpath(request.path), request.flags)
            elif isinstance(request, Close):
                self.handles.pop(request.handle, None)
            elif isinstance(request, (Read, Write)):
                opened = self.handles.get(request.handle)
                assert opened is not None, "a read or write through a handle not issued"
                if isinstance(request, Read):
                    self.reads[request.id] = (opened, request.offset)
                    continue
                assert opened.flags is not None and opened.flags & OpenFlags.WRITE
                if not opened.flags & OpenFlags.APPEND:
                    self.check_position(request.offset, len(request.data))
                self.count(opened, Direction.UPLOAD, len(request.data))
        return requests

    def forwarded_replies(self, data: bytes) -> list[object]:
        """Replies the auditor passed: each answers an outstanding request; data crossed."""
        replies = [decode_response(body) for body in PacketFramer().feed(data)]
        for reply in replies:
            if not hasattr(reply, "id"):
                continue  # VERSION
            rid = reply.id
            assert rid in self.outstanding, f"a reply to {rid}, which nothing asked"
            self.outstanding.discard(rid)
            opening, read = self.opening.pop(rid, None), self.reads.pop(rid, None)
            if isinstance(reply, Handle) and opening is not None:
                self.handles[reply.handle] = opening
            elif isinstance(reply, Handle):
                self.handles[reply.handle] = _Opened("(a directory)", None)
            elif isinstance(reply, Data):
                assert read is not None, "data that answers no read"
                self.check_position(read[1], len(reply.data))
                self.count(read[0], Direction.DOWNLOAD, len(reply.data))
        return replies

    def check_position(self, offset: int, size: int) -> None:
        cap = self.policy.max_bytes
        assert cap is None or not size or offset + size <= cap, f"{offset}+{size} past the cap"

    def count(self, opened: _Opened, direction: Direction, size: int) -> None:
        self.crossed += size
        cap = self.policy.max_bytes
        for key in ((id(opened), direction), (opened.path, direction)):
            table: dict[Any, int] = self.per_open if isinstance(key[0], int) else self.per_file
            table[key] = table.get(key, 0) + size
            assert cap is None or table[key] <= cap, f"cap exceeded for {key}"


@dataclass
class FuzzClient:
    """A client that follows the protocol or, if ``hostile``, now and then does not."""

    hostile: bool
    next_id: int = 1
    #: Ids of the requests sent last, likely still outstanding: what an attacker reuses.
    recent: list[int] = field(default_factory=list)
    files: list[bytes] = field(default_factory=list)
    dirs: list[bytes] = field(default_factory=list)
    #: Request id -> whether it opened a directory, for the HANDLE replies.
    opening: dict[int, bool] = field(default_factory=dict)

    def issued(self, request_id: int, handle: bytes) -> None:
        (self.dirs if self.opening.pop(request_id, False) else self.files).append(handle)

    def request(self, draw: Any) -> bytes:
        rid = self.next_id
        self.next_id += 1
        cheat = self.hostile and draw(st.sampled_from([False] * 4 + [True]))
        if cheat and self.recent and draw(st.booleans()):  # an id likely still outstanding
            rid = draw(st.sampled_from(self.recent))
        self.recent = [*self.recent[-3:], rid]
        path = draw(st.sampled_from(["/a", "/./a", "/b", "/c"]))
        kind = draw(st.sampled_from(["open", "read", "read", "read", "write", "write", "write",
                                     "close", "stat", "fstat", "opendir", "readdir"]))  # fmt: skip
        handles = self.dirs if kind == "readdir" else self.files
        if kind == "close" and self.dirs and draw(st.booleans()):
            handles = self.dirs
        if cheat or (not handles and kind not in ("open", "stat", "opendir")):
            # A handle guessed (sftp-server numbers them from 0), or one no longer open.
            handle = draw(st.integers(0, 4)).to_bytes(4, "big")
            if not cheat:
                kind = "open"
        else:
            handle = draw(st.sampled_from(handles)) if handles else b""
        if kind in ("open", "opendir"):
            self.opening[rid] = kind == "opendir"
            if kind == "opendir":
                return path_request(PacketType.OPENDIR, rid, "/")
            return open_request(rid, path, draw(st.sampled_from(FLAGS)))
        if kind == "read":
            offset, length = draw(st.integers(0, 2 * CAP)), draw(st.integers(1, CAP))
            return read_request(rid, handle, offset, length)
        if kind == "write":
            size = draw(st.integers(0, CAP))
            return write_request(rid, handle, draw(st.integers(0, 2 * CAP)), b"w" * size)
        if kind == "close":
            if not cheat and handle in handles:
                handles.remove(handle)
            return close_request(rid, handle)
        if kind == "stat":
            return path_request(PacketType.STAT, rid, path)
        if kind == "fstat":
            return fstat_request(rid, handle)
        return packet(PacketType.READDIR, rid, s(handle))


@given(st.data())
@FUZZ
def test_sftp_every_crossed_byte_is_audited_and_no_cap_is_exceeded(data: st.DataObject) -> None:
    draw = data.draw
    policy = draw(st.sampled_from(POLICIES))
    sizes = st.integers(0, 3 * CAP)
    files = {path: bytearray((b"0123456789" * CAP)[: draw(sizes)]) for path in ("/a", "/b")}
    target = ModelTarget(files)
    run = FuzzRun(policy, SftpAuditor(policy))
    client = FuzzClient(hostile=draw(st.sampled_from([False, False, True])))
    hostile_target = draw(st.sampled_from([False] * 4 + [True]))

    def send(stream: bytes) -> None:
        for piece in cut(stream, draw):
            verdict = run.auditor.from_client(piece)
            run.note(verdict)
            target.receive(run.forwarded_requests(verdict.forward))

    def deliver(count: int) -> None:
        chosen = []
        for _ in range(min(count, len(target.queue))):
            chosen.append(target.queue.pop(draw(st.integers(0, len(target.queue) - 1))))
        if hostile_target and draw(st.sampled_from([False, False, True])):
            # A reply nobody asked for, or a second one, or one of the wrong type.
            bogus = draw(st.sampled_from([data_reply, handle_reply]))
            rid = draw(st.integers(1, client.next_id))
            chosen.insert(draw(st.integers(0, len(chosen))), bogus(rid, b"\x00\x00\x00\x01"))
        for piece in cut(b"".join(chosen), draw):
            verdict = run.auditor.from_target(piece)
            run.note(verdict)
            for reply in run.forwarded_replies(verdict.forward):
                if isinstance(reply, Handle):
                    client.issued(reply.id, reply.handle)

    send(init())
    deliver(1)
    for _ in range(draw(st.integers(3, 25))):
        send(b"".join(client.request(draw) for _ in range(draw(st.integers(0, 4)))))
        deliver(draw(st.integers(0, 6)))
    if draw(st.booleans()):  # else the channel is cut with replies still on their way
        deliver(len(target.queue))
    run.events += run.auditor.finish()
    audited = sum(e.details.get("bytes", 0) for e in run.events if e.action == "file.closed")
    assert audited == run.crossed
    event(f"protocol violation: {run.aborted}")
    event(f"cap refusal: {any('cap' in e.reason for e in run.events)}")
    event(f"bytes crossed: {run.crossed > 0}")


# -- scp ------------------------------------------------------------------------------------


@st.composite
def scp_stream(draw: Any) -> tuple[bytes, list[tuple[int, int, int]]]:
    """A legacy scp stream, and where each file's contents lie in it (start, size, announced)."""
    stream, files = b"", []
    names = st.text(alphabet="ab.x", min_size=1, max_size=4).filter(lambda n: n != "..")
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["file", "file", "dir", "end", "time", "warn", "garbage"]))
        if kind == "file":
            content = draw(st.integers(0, 2 * CAP).map(lambda n: (b"scp\n" * CAP)[:n]))
            stream += f"C0644 {len(content)} {draw(names)}\n".encode()
            files.append((len(stream), len(content), len(content)))
            stream += content + b"\0"
        elif kind == "dir":
            stream += f"D0755 0 {draw(names)}\n".encode()
        elif kind == "end":
            stream += b"E\n"
        elif kind == "time":
            stream += b"T1700000000 0 1700000000 0\n"
        elif kind == "warn":
            stream += b"\x01scp: a warning\n"
        else:
            stream += b"X" + draw(st.binary(max_size=20)).replace(b"\n", b"") + b"\n"
    return stream, files


@given(scp_stream(), st.sampled_from([None, CAP]), st.data())
@FUZZ
def test_scp_every_crossed_byte_is_audited_and_no_cap_is_exceeded(
    made: tuple[bytes, list[tuple[int, int, int]]], cap: int | None, data: st.DataObject
) -> None:
    stream, files = made
    policy = TransferPolicy(TransferMode.ALLOW, "rule scp", max_bytes=cap)
    auditor = ScpAuditor(policy, ExecTransfer("scp", Direction.DOWNLOAD, ("/srv",)))
    passed, events, aborted = b"", [], False
    for piece in cut(stream, data.draw):
        verdict = auditor.from_target(piece)
        assert not (aborted and verdict.forward)
        passed += verdict.forward
        events += verdict.events
        aborted = aborted or bool(verdict.abort)
        assert auditor.from_client(b"\0").forward == b"\0"  # acks pass untouched
    events += auditor.finish()
    assert stream.startswith(passed)  # what passes is the stream, up to any problem
    crossed = sum(max(0, min(len(passed), start + size) - start) for start, size, _ in files)
    audited = [e.details["bytes"] for e in events if e.action == "file.closed"]
    assert sum(audited) == crossed
    assert cap is None or all(size <= cap for size in audited)
    if cap is not None:  # a file announced over the cap has none of its bytes passed
        assert all(start >= len(passed) for start, _, size in files if size > cap)
