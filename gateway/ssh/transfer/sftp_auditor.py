"""Per-file audit and policy for an SFTP channel (also what ``scp`` uses since OpenSSH 9).

:class:`SftpAuditor` follows both directions of an SFTP v3 conversation,
plain Python with no sockets, and holds it to the protocol's state exactly:

- INIT comes first and once; the target answers VERSION 3;
- a request id is outstanding at most once, and a reply must answer an
  outstanding request with a reply type that request allows;
- a request about a handle names one the target issued and that is not
  being closed, of the right kind (file or directory); the target never
  issues a handle that is still open.

Anything else is a protocol violation: the channel is closed and the
violation audited (``file.refused``, operation ``protocol``). So no reply
is forwarded unchecked, and no handle, hence no byte, escapes the tally.

Within the protocol, what the session's
:class:`~gateway.domain.transfer.policy.TransferPolicy` forbids is answered
by the gateway itself (``PERMISSION_DENIED``); the cap is enforced; each
file is tallied: path, direction, bytes, and the sha256 of its run from
offset 0. :meth:`SftpAuditor.finish` audits the files still open when the
channel closed as interrupted.

The cap (``max_bytes``) bounds, in each direction, the bytes that cross for
one file, counted per handle and per session (every handle the session
opens on the same path adds to one count, so reopening does not reset it),
in every open mode; and no byte at a position at or past the cap is read
or written. Appended bytes have no position: the two counts bound them.
"""

from __future__ import annotations

import posixpath
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from gateway.domain.transfer.policy import Direction, TransferPolicy
from gateway.ssh.transfer.events import FileEvent, FileTally, ReorderBudget, Verdict
from gateway.ssh.transfer.sftp import (
    Attributes,
    AttrsReply,
    Close,
    Data,
    Extended,
    Handle,
    HandleRequest,
    HandleSetstat,
    Init,
    Open,
    OpenFlags,
    Other,
    PacketFramer,
    PacketType,
    PathRequest,
    Read,
    Rename,
    Request,
    Response,
    SftpProtocolError,
    Status,
    StatusCode,
    Version,
    Write,
    decode_request,
    decode_response,
    encode_data,
    encode_status,
    frame,
    replies_allowed,
    reply_type,
    request_type,
)
from gateway.ssh.transfer.sftp_rules import Refusal, SftpRules, direction_of

#: Requests awaiting a reply that one channel may have (OpenSSH's client keeps at most 64).
MAX_PENDING_REQUESTS = 4096
#: Handles (files and directories) one channel may hold open at once.
MAX_OPEN_HANDLES = 256
#: Sizes from STAT and LSTAT replies kept for later downloads of the same path.
MAX_REMEMBERED_SIZES = 256
#: Files one capped session may count bytes for (the per-session half of the cap).
MAX_CAPPED_FILES = 100_000

_PATH_ACTIONS = {
    PacketType.REMOVE: "file.removed",
    PacketType.RMDIR: "file.rmdir",
    PacketType.MKDIR: "file.mkdir",
    PacketType.SETSTAT: "file.setstat",
}


class _OpenFile:
    """A file handle the target issued, and what has crossed through it."""

    def __init__(self, opened: Open, tally: FileTally) -> None:
        self.path = opened.path
        self.flags = opened.flags
        self.tally = tally
        #: The name the session-wide count of the cap is kept under.
        self.key = posixpath.normpath(opened.path)
        self.moved = {Direction.DOWNLOAD: 0, Direction.UPLOAD: 0}
        #: Requests about this file awaiting a reply (its close is reported after them).
        self.outstanding = 0
        self.closing = False
        self.close_reply: Status | None = None
        #: A cap refusal was audited for this handle (later ones are only answered).
        self.capped = False

    @property
    def readable(self) -> bool:
        return bool(self.flags & OpenFlags.READ)

    @property
    def writable(self) -> bool:
        return bool(self.flags & (OpenFlags.WRITE | OpenFlags.APPEND))

    @property
    def appends(self) -> bool:
        return bool(self.flags & OpenFlags.APPEND)


class _OpenDir:
    """A directory handle the target issued."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.closing = False


@dataclass
class _Pending:
    """A forwarded request awaiting its reply."""

    request: Request
    file: _OpenFile | None = None
    #: What the request's handle named when it was sent (a handle may be issued anew
    #: once its CLOSE is sent: the target may answer out of order).
    named: _OpenFile | _OpenDir | None = None


def _handle_of(request: Request) -> bytes | None:
    if isinstance(request, (Close, Read, Write, HandleSetstat, HandleRequest, Extended)):
        return request.handle
    return None


class SftpAuditor:
    """Audits and polices one SFTP channel, packet by packet, in both directions."""

    tool = "sftp"

    def __init__(self, policy: TransferPolicy) -> None:
        self._policy = policy
        self._rules = SftpRules(policy)
        self._requests = PacketFramer()
        self._replies = PacketFramer()
        self._init_sent = False
        self._version_seen = False
        self._pending: dict[int, _Pending] = {}
        self._handles: dict[bytes, _OpenFile | _OpenDir] = {}
        #: Files opened and not yet reported closed (insertion-ordered).
        self._unreported: dict[_OpenFile, None] = {}
        #: Bytes moved per (path, direction) in this session, for the cap.
        self._moved: dict[tuple[str, Direction], int] = {}
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self._budget = ReorderBudget()
        self._failed = False

    # -- client to target -----------------------------------------------------

    def from_client(self, data: bytes) -> Verdict:
        """Police the client's requests: forward the allowed, answer the refused ourselves."""
        verdict = Verdict()
        if self._failed:
            return verdict
        forward = bytearray()
        try:
            for body in self._requests.feed(data):
                request = decode_request(body)
                self._check_request(request)
                refused = self._rules.refused(request)
                if refused is None and isinstance(request, (Read, Write)):
                    refused = self._refused_transfer(request)
                if refused is None:
                    self._track_request(request)
                    forward += frame(body)
                else:
                    self._refuse(request, refused, verdict)
        except SftpProtocolError as exc:
            self._violation(str(exc), "client", verdict)
        verdict.forward = bytes(forward)
        return verdict

    def _check_request(self, request: Request) -> None:
        """The protocol's state (see the module docstring); SftpProtocolError if violated."""
        if isinstance(request, Init):
            if self._init_sent:
                raise SftpProtocolError("a second INIT")
            self._init_sent = True
            return
        if not self._init_sent:
            raise SftpProtocolError("a request before INIT")
        if request.id in self._pending:
            raise SftpProtocolError(f"request id {request.id} reused while outstanding")
        if len(self._pending) >= MAX_PENDING_REQUESTS:
            raise SftpProtocolError(f"more than {MAX_PENDING_REQUESTS} requests awaiting replies")
        handle = _handle_of(request)
        if handle is None:
            return
        opened = self._handles.get(handle)
        if opened is None or opened.closing:
            raise SftpProtocolError(
                f"request id {request.id} names a handle the target has not issued (or is closing)"
            )
        wants_file = isinstance(request, (Read, Write))
        wants_dir = isinstance(request, HandleRequest) and request.type == PacketType.READDIR
        if (wants_file and not isinstance(opened, _OpenFile)) or (
            wants_dir and not isinstance(opened, _OpenDir)
        ):
            raise SftpProtocolError(f"request id {request.id} uses a handle of the wrong kind")

    def _refused_transfer(self, request: Read | Write) -> Refusal | None:
        """A read or write through an open file: the handle's mode, then the cap."""
        opened = self._handles[request.handle]
        assert isinstance(opened, _OpenFile)  # _check_request made sure
        if isinstance(request, Read):
            if not opened.readable:
                return Refusal("read", f"pamgate: read of {opened.path} refused: "
                                "the file was not opened for reading")  # fmt: skip
            return None
        if not opened.writable:
            return Refusal("write", f"pamgate: write to {opened.path} refused: "
                            "the file was not opened for writing")  # fmt: skip
        position = None if opened.appends else request.offset
        left = self._cap_left(opened, Direction.UPLOAD, position)
        if left is not None and len(request.data) > left:
            return Refusal("write", self._cap_message(), cap=True)
        return None

    def _cap_message(self) -> str:
        cap = self._policy.max_bytes
        return f"pamgate: file larger than the {cap}-byte cap of {self._policy.source}"

    def _cap_left(
        self, opened: _OpenFile, direction: Direction, position: int | None
    ) -> int | None:
        """Bytes that may still cross for this file in ``direction``; None without a cap.

        ``position`` is where the bytes start in the file (None for appends).
        """
        cap = self._policy.max_bytes
        if cap is None:
            return None
        session = self._moved.get((opened.key, direction), 0)
        left = min(cap - opened.moved[direction], cap - session)
        if position is not None:
            left = min(left, cap - position)
        return max(left, 0)

    def _refuse(self, request: Request, refused: Refusal, verdict: Verdict) -> None:
        message = refused.message
        request_id = getattr(request, "id", 0)
        verdict.reply += encode_status(request_id, StatusCode.PERMISSION_DENIED, message)
        details: dict[str, Any] = {"tool": self.tool, "operation": refused.what}
        if isinstance(request, (Read, Write)):
            opened = self._handles[request.handle]
            details["path"] = opened.path
            if refused.cap and isinstance(opened, _OpenFile):
                opened.tally.failed = "size cap"
                if opened.capped:
                    return  # audited (and told) once per handle; refused every time
                opened.capped = True
        elif isinstance(request, Rename):
            details["path"], details["new_path"] = request.old, request.new
        elif (path := getattr(request, "path", None)) is not None:
            details["path"] = path
        verdict.notices.append(message)
        verdict.events.append(FileEvent("file.refused", "refused", details, reason=message))

    def _track_request(self, request: Request) -> None:
        if isinstance(request, Init):
            return
        handle = _handle_of(request)
        opened = self._handles.get(handle) if handle is not None else None
        pending = _Pending(request, named=opened)
        if isinstance(opened, _OpenFile):
            pending.file = opened
            if isinstance(request, Close):
                opened.closing = True
            else:
                opened.outstanding += 1
        elif isinstance(opened, _OpenDir) and isinstance(request, Close):
            opened.closing = True
        if isinstance(request, Write) and isinstance(opened, _OpenFile):
            # Bytes written cross now: they are counted whatever the target answers.
            self._count(opened, Direction.UPLOAD, request.offset, request.data)
        self._pending[request.id] = pending

    def _count(self, opened: _OpenFile, direction: Direction, offset: int, data: bytes) -> None:
        if self._policy.max_bytes is not None:
            key = (opened.key, direction)
            if key not in self._moved and len(self._moved) >= MAX_CAPPED_FILES:
                raise SftpProtocolError(f"more than {MAX_CAPPED_FILES} files under a cap")
            self._moved[key] = self._moved.get(key, 0) + len(data)
        opened.tally.add(offset, data)
        opened.moved[direction] += len(data)

    # -- target to client -----------------------------------------------------

    def from_target(self, data: bytes) -> Verdict:
        """Follow the target's replies: opened handles, data read, outcomes; enforce the cap."""
        verdict = Verdict()
        if self._failed:
            return verdict
        forward = bytearray()
        try:
            for body in self._replies.feed(data):
                forward += self._follow_reply(decode_response(body), body, verdict)
        except SftpProtocolError as exc:
            self._violation(str(exc), "target", verdict)
        verdict.forward = bytes(forward)
        return verdict

    def _follow_reply(self, reply: Response, body: bytes, verdict: Verdict) -> bytes:
        if isinstance(reply, Version):
            if not self._init_sent or self._version_seen:
                raise SftpProtocolError("a VERSION that answers no INIT")
            if reply.version != 3:
                raise SftpProtocolError(f"SFTP version {reply.version}; only version 3 is audited")
            self._version_seen = True
            return frame(body)
        pending = self._pending.pop(reply.id, None)
        if pending is None:
            raise SftpProtocolError(f"a reply to request id {reply.id}, which is not outstanding")
        asked = request_type(pending.request)
        if reply_type(reply) not in replies_allowed(asked):
            raise SftpProtocolError(
                f"a {_type_name(reply_type(reply))} reply to a {_type_name(asked)} request "
                f"(id {reply.id})"
            )
        opened = pending.file
        if opened is not None and not isinstance(pending.request, Close):
            opened.outstanding -= 1
        forward = self._answer(pending, reply, body, verdict)
        if opened is not None:
            self._report_if_closed(opened, verdict)
        return forward

    def _answer(self, pending: _Pending, reply: Response, body: bytes, verdict: Verdict) -> bytes:
        """Follow one reply to a pending request; the bytes to forward in its place."""
        request, opened = pending.request, pending.file
        if isinstance(request, Open):
            self._opened(request, reply, verdict)
        elif isinstance(request, Other) and request.type == PacketType.OPENDIR:
            if isinstance(reply, Handle):
                self._issue(reply.handle, _OpenDir(request.path or ""))
        elif isinstance(request, Read) and opened is not None:
            return self._follow_read(request, opened, reply, body, verdict)
        elif isinstance(request, Write) and opened is not None:
            if isinstance(reply, Status) and reply.code != StatusCode.OK:
                opened.tally.failed = _status_text(reply)
        elif isinstance(request, Close):
            if self._handles.get(request.handle) is pending.named:
                del self._handles[request.handle]
            if opened is not None and isinstance(reply, Status):
                opened.close_reply = reply
        elif isinstance(reply, AttrsReply):
            self._follow_attrs(request, opened, reply)
        elif isinstance(request, HandleSetstat) and isinstance(reply, Status):
            self._follow_fsetstat(request, opened, reply, verdict)
        elif isinstance(request, (PathRequest, Rename)) and isinstance(reply, Status):
            if isinstance(request, Rename):
                action = "file.renamed"
                details: dict[str, Any] = {"path": request.old, "new_path": request.new,
                                           "posix": request.posix}  # fmt: skip
            else:
                action, details = _PATH_ACTIONS[request.type], _path_details(request)
            ok = reply.code == StatusCode.OK
            verdict.events.append(FileEvent(
                action, "success" if ok else "failure", {"tool": self.tool, **details},
                "" if ok else _status_text(reply),
            ))  # fmt: skip
        return frame(body)

    def _issue(self, handle: bytes, opened: _OpenFile | _OpenDir) -> None:
        earlier = self._handles.get(handle)
        if earlier is not None and not earlier.closing:
            raise SftpProtocolError("the target issued a handle that is still open")
        if earlier is None and len(self._handles) >= MAX_OPEN_HANDLES:
            raise SftpProtocolError(f"more than {MAX_OPEN_HANDLES} handles open")
        self._handles[handle] = opened

    def _opened(self, request: Open, reply: Response, verdict: Verdict) -> None:
        direction = direction_of(request.flags)
        details = {"tool": self.tool, "path": request.path, "direction": direction,
                   "flags": _flag_names(request.flags)}  # fmt: skip
        if isinstance(reply, Status):
            verdict.events.append(
                FileEvent("file.opened", "failure", details, reason=_status_text(reply))
            )
            return
        assert isinstance(reply, Handle)  # replies_allowed(OPEN) made sure
        flags = request.flags
        # An upload covers the whole file only if it starts from an empty one.
        fresh = bool(flags & OpenFlags.TRUNC) or (OpenFlags.CREAT | OpenFlags.EXCL) in flags
        whole = direction == Direction.DOWNLOAD or (fresh and not flags & OpenFlags.APPEND)
        opened = _OpenFile(request, FileTally(request.path, direction, whole, self._budget))
        if direction == Direction.DOWNLOAD:
            opened.tally.size = self._sizes.get(request.path)
        self._issue(reply.handle, opened)
        self._unreported[opened] = None
        verdict.events.append(FileEvent("file.opened", "success", details))

    def _follow_read(
        self, request: Read, opened: _OpenFile, reply: Response, body: bytes, verdict: Verdict
    ) -> bytes:
        tally = opened.tally
        if isinstance(reply, Status):
            if reply.code == StatusCode.EOF:
                tally.eof_at = request.offset
            return frame(body)
        assert isinstance(reply, Data)  # replies_allowed(READ) made sure
        if len(reply.data) > request.length:
            raise SftpProtocolError(f"more data than request id {reply.id} asked for")
        data = reply.data
        left = self._cap_left(opened, Direction.DOWNLOAD, request.offset)
        if left is not None and len(data) > left:
            tally.failed = "size cap"
            if left == 0:
                # Bytes past the cap never reach the client.
                message = self._cap_message()
                if not opened.capped:
                    opened.capped = True
                    verdict.notices.append(message)
                    verdict.events.append(FileEvent(
                        "file.refused", "refused",
                        {"tool": self.tool, "operation": "read", "path": opened.path},
                        reason=message,
                    ))  # fmt: skip
                return encode_status(reply.id, StatusCode.PERMISSION_DENIED, message)
            data = data[:left]
        self._count(opened, Direction.DOWNLOAD, request.offset, data)
        return frame(body) if data is reply.data else encode_data(reply.id, data)

    def _follow_attrs(self, request: Request, opened: _OpenFile | None, reply: AttrsReply) -> None:
        """Sizes the target tells: what a complete download of the file must reach."""
        size = reply.attrs.regular_file_size
        if opened is not None:
            if size is not None:
                opened.tally.size = size
        elif isinstance(request, Other) and request.path is not None:
            self._sizes.pop(request.path, None)
            if size is not None:
                self._sizes[request.path] = size
                if len(self._sizes) > MAX_REMEMBERED_SIZES:
                    self._sizes.popitem(last=False)

    def _follow_fsetstat(
        self, request: HandleSetstat, opened: _OpenFile | None, reply: Status, verdict: Verdict
    ) -> None:
        details = _attr_details(request.attrs)
        ok = reply.code == StatusCode.OK
        if opened is not None:
            details["path"] = opened.path
            tally = opened.tally
            if ok and request.attrs.size is not None:
                # scp opens without O_TRUNC and truncates to the size it wrote at the end:
                # then the file holds exactly the bytes that passed.
                tally.whole = tally.sequential and request.attrs.size == tally.next_offset
        verdict.events.append(FileEvent(
            "file.setstat", "success" if ok else "failure", {"tool": self.tool, **details},
            "" if ok else _status_text(reply),
        ))  # fmt: skip

    def _report_if_closed(self, opened: _OpenFile, verdict: Verdict) -> None:
        """Report a closed file once the replies to its earlier requests are all in."""
        if opened.close_reply is None or opened.outstanding or opened not in self._unreported:
            return
        del self._unreported[opened]
        reply, tally = opened.close_reply, opened.tally
        if reply.code != StatusCode.OK:
            tally.failed = tally.failed or f"close failed: {_status_text(reply)}"
        verdict.events.append(FileEvent("file.closed", "success", tally.summary(tool=self.tool)))

    # -- the end --------------------------------------------------------------

    def _violation(self, problem: str, side: str, verdict: Verdict) -> None:
        self._failed = True
        message = f"pamgate: SFTP protocol violation by the {side} ({problem}); channel closed"
        verdict.abort = message
        verdict.events.append(
            FileEvent("file.refused", "refused", {"tool": self.tool, "operation": "protocol"},
                      reason=message)
        )  # fmt: skip

    def finish(self, exit_status: int | None = None) -> list[FileEvent]:
        """Files not reported closed when the channel closed: audited as interrupted."""
        events = []
        for opened in self._unreported:
            tally = opened.tally
            tally.failed = tally.failed or "the channel closed with the file open"
            events.append(
                FileEvent("file.closed", "interrupted", tally.summary(tool=self.tool),
                          reason=tally.failed)
            )  # fmt: skip
        self._unreported.clear()
        return events


def _path_details(request: PathRequest) -> dict[str, Any]:
    details: dict[str, Any] = {"path": request.path}
    if request.attrs is not None:
        details.update(_attr_details(request.attrs))
    return details


def _attr_details(attrs: Attributes) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if attrs.permissions is not None:
        details["permissions"] = oct(attrs.permissions & 0o7777)
    if attrs.size is not None:
        details["size"] = attrs.size
    return details


def _flag_names(flags: OpenFlags) -> str:
    return ",".join(flag.name.lower() for flag in OpenFlags if flag in flags and flag.name)


def _type_name(kind: int) -> str:
    try:
        return PacketType(kind).name
    except ValueError:
        return f"type {kind}"


def _status_text(status: Status) -> str:
    try:
        name = StatusCode(status.code).name.lower()
    except ValueError:
        name = f"status {status.code}"
    return f"{name}: {status.message[:200]}" if status.message else name
