"""Per-file audit and policy for file transfers passing through the relay.

Three auditors, one per way files move, all plain Python with no sockets:

- :class:`SftpAuditor` parses both directions of an ``sftp`` subsystem
  channel (also what ``scp`` uses since OpenSSH 9). It refuses what the
  session's :class:`~gateway.domain.transfer.policy.TransferPolicy` forbids with an
  SFTP ``PERMISSION_DENIED`` reply of its own, caps file sizes, and tracks
  each open file: path, direction, bytes, and a running sha256 while the
  transfer is sequential from offset 0;
- :class:`ScpAuditor` parses the legacy ``scp -t/-f`` stream in its data
  direction (file names, sizes, contents);
- :class:`StreamAuditor` counts an ``rsync --server`` stream, whose
  protocol is not parsed: the audit names the command, its direction and
  the bytes.

Each call returns a :class:`Verdict`: the bytes to pass on, the gateway's
own replies to the client, notices for the client's stderr, the audit events
(:class:`FileEvent`) and, for hostile or over-cap streams, why the channel
must close. :meth:`finish` audits files still open when the channel closed
as incomplete.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.domain.transfer.policy import Direction, ExecTransfer, TransferMode, TransferPolicy
from gateway.ssh.transfer.sftp import (
    Close,
    Data,
    Extended,
    Handle,
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
    SftpProtocolError,
    Status,
    StatusCode,
    Write,
    decode_request,
    decode_response,
    encode_data,
    encode_status,
    frame,
)

#: Requests awaiting a reply that one channel may have (OpenSSH's client keeps at most 64).
MAX_PENDING_REQUESTS = 4096
#: Files one channel may hold open at once.
MAX_OPEN_FILES = 256
#: Longest control line of the scp protocol accepted.
MAX_SCP_LINE = 8192

#: EXTENDED requests that change nothing and read no file contents.
READ_ONLY_EXTENSIONS = frozenset(
    {
        "statvfs@openssh.com",
        "fstatvfs@openssh.com",
        "limits@openssh.com",
        "expand-path@openssh.com",
        "home-directory",
        "users-groups-by-id@openssh.com",
        "fsync@openssh.com",
    }
)


@dataclass(frozen=True)
class FileEvent:
    """One audit event about a file; the session adds who, where and under what authority."""

    action: str
    outcome: str
    details: dict[str, Any]
    reason: str = ""


@dataclass
class Verdict:
    """What to do with one chunk of a transfer stream."""

    forward: bytes = b""
    #: The gateway's own replies, for the client (SFTP: whole packets).
    reply: bytes = b""
    notices: list[str] = field(default_factory=list)
    events: list[FileEvent] = field(default_factory=list)
    #: Set when the channel must be closed (hostile stream, cap on an unparsed stream).
    abort: str | None = None


class _Transfer:
    """What passed through for one file: bytes, and a running hash while sequential from 0."""

    def __init__(self, path: str, direction: str, whole: bool) -> None:
        self.path = path
        self.direction = direction
        self.bytes = 0
        self.next_offset = 0
        self.sequential = True
        self._hash = hashlib.sha256()
        #: Whether the transfer can cover the whole file (uploads: truncated or new).
        self.whole = whole
        self.ended = False  # downloads: EOF read at the end of the sequential run
        self.failed = ""
        self.started = time.monotonic()

    def add(self, offset: int, data: bytes) -> None:
        self.bytes += len(data)
        if offset == self.next_offset and self.sequential:
            self._hash.update(data)
            self.next_offset += len(data)
        elif data:
            self.sequential = False

    @property
    def complete(self) -> bool:
        done = self.ended if self.direction == Direction.DOWNLOAD else True
        return self.whole and self.sequential and done and not self.failed

    def summary(self, **extra: Any) -> dict[str, Any]:
        complete = self.complete
        details = {
            "path": self.path,
            "direction": self.direction,
            "bytes": self.bytes,
            "sha256": self._hash.hexdigest() if complete else None,
            "complete": complete,
            "seconds": round(time.monotonic() - self.started, 3),
        }
        if self.failed:
            details["problem"] = self.failed
        details.update(extra)
        return details


def _direction_of(flags: OpenFlags) -> Direction | Literal["both"]:
    reads = bool(flags & OpenFlags.READ)
    writes = bool(flags & (OpenFlags.WRITE | OpenFlags.APPEND | OpenFlags.CREAT | OpenFlags.TRUNC))
    if reads and writes:
        return "both"
    return Direction.UPLOAD if writes else Direction.DOWNLOAD


_PATH_ACTIONS = {
    PacketType.REMOVE: "file.removed",
    PacketType.RMDIR: "file.rmdir",
    PacketType.MKDIR: "file.mkdir",
    PacketType.SETSTAT: "file.setstat",
}


class SftpAuditor:
    """Audits and polices one SFTP channel, packet by packet, in both directions."""

    tool = "sftp"

    def __init__(self, policy: TransferPolicy) -> None:
        self._policy = policy
        self._requests = PacketFramer()
        self._replies = PacketFramer()
        #: Request id -> what the reply completes.
        self._pending: dict[int, tuple[Any, ...]] = {}
        self._files: dict[bytes, _Transfer] = {}
        self._capped: set[bytes] = set()
        self._failed = False

    # -- client to target -----------------------------------------------------

    def from_client(self, data: bytes) -> Verdict:
        """Police the client's requests: forward the allowed, answer the refused ourselves."""
        verdict = Verdict()
        if self._failed:
            return verdict
        try:
            forward = bytearray()
            for body in self._requests.feed(data):
                request = decode_request(body)
                refused = self._refused_because(request)
                if refused is None:
                    self._track_request(request, verdict)
                    forward += frame(body)
                else:
                    self._refuse(request, refused, verdict)
            verdict.forward = bytes(forward)
        except SftpProtocolError as exc:
            self._hostile(str(exc), "client", verdict)
        return verdict

    def _refused_because(self, request: Request) -> tuple[str, str] | None:
        """(what, why) for a request the policy forbids, else None."""
        policy = self._policy
        changes = policy.allows_changes
        if isinstance(request, Open):
            direction = _direction_of(request.flags)
            wanted = (Direction.DOWNLOAD, Direction.UPLOAD) if direction == "both" else (direction,)
            for way in wanted:
                if not policy.allows(way):
                    return f"{way} of {request.path}", policy.refusal(f"{way} of {request.path}")
            return self._out_of_scope(request.path)
        if isinstance(request, PathRequest):
            what = f"{request.type.name.lower()} {request.path}"
            if not changes:
                return what, policy.refusal(what)
            return self._out_of_scope(request.path)
        if isinstance(request, HandleSetstat):
            if not changes:
                return "fsetstat", policy.refusal("fsetstat")
            return None
        if isinstance(request, Rename):
            what = f"rename {request.old} to {request.new}"
            if not changes:
                return what, policy.refusal(what)
            return self._out_of_scope(request.old) or self._out_of_scope(request.new)
        if isinstance(request, Write):
            cap = policy.max_bytes
            if cap is not None and request.offset + len(request.data) > cap:
                return "write", f"pamgate: file larger than the {cap}-byte cap of {policy.source}"
            return None
        if isinstance(request, Extended):
            unrestricted = policy.mode == TransferMode.ALLOW and policy.paths is None
            if unrestricted or request.name in READ_ONLY_EXTENSIONS:
                return None
            what = f"extension {request.name[:80]}"
            return what, f"pamgate: {what} refused under {policy.source}"
        if isinstance(request, Other) and request.path is not None:
            if request.type == PacketType.SYMLINK:
                if not changes or policy.paths is not None:
                    return "symlink", f"pamgate: symlink refused under {policy.source}"
                return None
            if request.type != PacketType.REALPATH:
                return self._out_of_scope(request.path)
        return None

    def _out_of_scope(self, path: str) -> tuple[str, str] | None:
        why = self._policy.path_refused_because(path)
        return (path, f"pamgate: {why} ({self._policy.source})") if why else None

    def _refuse(self, request: Request, refused: tuple[str, str], verdict: Verdict) -> None:
        what, message = refused
        request_id = getattr(request, "id", 0)
        verdict.reply += encode_status(request_id, StatusCode.PERMISSION_DENIED, message)
        verdict.notices.append(message)
        details: dict[str, Any] = {"tool": self.tool, "operation": what}
        if isinstance(request, Write):
            transfer = self._files.get(request.handle)
            if transfer is not None:
                details["path"] = transfer.path
                transfer.failed = "size cap"
        elif isinstance(request, Rename):
            details["path"], details["new_path"] = request.old, request.new
        elif (path := getattr(request, "path", None)) is not None:
            details["path"] = path
        verdict.events.append(FileEvent("file.refused", "refused", details, reason=message))

    def _track_request(self, request: Request, verdict: Verdict) -> None:
        if isinstance(request, Init):
            return
        if len(self._pending) >= MAX_PENDING_REQUESTS:
            raise SftpProtocolError(f"more than {MAX_PENDING_REQUESTS} requests awaiting replies")
        if isinstance(request, Open):
            self._pending[request.id] = ("open", request)
        elif isinstance(request, Close) and request.handle in self._files:
            self._pending[request.id] = ("close", request.handle)
        elif isinstance(request, Read) and request.handle in self._files:
            self._pending[request.id] = ("read", request.handle, request.offset)
        elif isinstance(request, Write) and request.handle in self._files:
            self._files[request.handle].add(request.offset, request.data)
            self._pending[request.id] = ("write", request.handle)
        elif isinstance(request, PathRequest):
            details: dict[str, Any] = {"path": request.path}
            if request.attrs is not None and request.attrs.permissions is not None:
                details["permissions"] = oct(request.attrs.permissions & 0o7777)
            if request.attrs is not None and request.attrs.size is not None:
                details["size"] = request.attrs.size
            self._pending[request.id] = ("path", _PATH_ACTIONS[request.type], details)
        elif isinstance(request, HandleSetstat) and request.handle in self._files:
            details = {"path": self._files[request.handle].path}
            if request.attrs.permissions is not None:
                details["permissions"] = oct(request.attrs.permissions & 0o7777)
            if request.attrs.size is not None:
                details["size"] = request.attrs.size
            self._pending[request.id] = ("fsetstat", request.handle, details)
        elif isinstance(request, Rename):
            details = {"path": request.old, "new_path": request.new, "posix": request.posix}
            self._pending[request.id] = ("path", "file.renamed", details)

    # -- target to client -----------------------------------------------------

    def from_target(self, data: bytes) -> Verdict:
        """Follow the target's replies: opened handles, data read, outcomes; enforce the cap."""
        verdict = Verdict()
        if self._failed:
            return verdict
        try:
            forward = bytearray()
            for body in self._replies.feed(data):
                forward += self._follow_reply(body, verdict)
            verdict.forward = bytes(forward)
        except SftpProtocolError as exc:
            self._hostile(str(exc), "target", verdict)
        return verdict

    def _follow_reply(self, body: bytes, verdict: Verdict) -> bytes:
        reply = decode_response(body)
        request_id = getattr(reply, "id", None)
        pending = self._pending.pop(request_id, None) if request_id is not None else None
        if pending is None:
            return frame(body)
        kind = pending[0]
        if kind == "open":
            opened: Open = pending[1]
            direction = _direction_of(opened.flags)
            details = {"tool": self.tool, "path": opened.path, "direction": direction,
                       "flags": _flag_names(opened.flags)}  # fmt: skip
            if isinstance(reply, Handle):
                if len(self._files) >= MAX_OPEN_FILES:
                    raise SftpProtocolError(f"more than {MAX_OPEN_FILES} files open")
                flags = opened.flags
                # An upload covers the whole file only if it starts from an empty one.
                fresh = bool(flags & OpenFlags.TRUNC) or (OpenFlags.CREAT | OpenFlags.EXCL) in flags
                whole = direction == Direction.DOWNLOAD or (fresh and not flags & OpenFlags.APPEND)
                self._files[reply.handle] = _Transfer(opened.path, direction, whole)
                verdict.events.append(FileEvent("file.opened", "success", details))
            elif isinstance(reply, Status):
                verdict.events.append(
                    FileEvent("file.opened", "failure", details, reason=_status_text(reply))
                )
        elif kind == "read":
            return self._follow_read(pending[1], pending[2], reply, body, verdict)
        elif kind == "write":
            if isinstance(reply, Status) and reply.code != StatusCode.OK:
                self._files[pending[1]].failed = _status_text(reply)
        elif kind == "close":
            transfer = self._files.pop(pending[1])
            self._capped.discard(pending[1])
            if isinstance(reply, Status) and reply.code != StatusCode.OK:
                transfer.failed = transfer.failed or f"close failed: {_status_text(reply)}"
            verdict.events.append(
                FileEvent("file.closed", "success", transfer.summary(tool=self.tool))
            )
        elif kind == "fsetstat" and isinstance(reply, Status):
            truncated = self._files.get(pending[1])
            size = pending[2].get("size")
            if truncated is not None and size is not None and reply.code == StatusCode.OK:
                # scp opens without O_TRUNC and truncates to the size it wrote at the end:
                # then the file holds exactly the bytes that passed.
                truncated.whole = truncated.sequential and size == truncated.next_offset
            outcome = "success" if reply.code == StatusCode.OK else "failure"
            details = {"tool": self.tool, **pending[2]}
            reason = "" if outcome == "success" else _status_text(reply)
            verdict.events.append(FileEvent("file.setstat", outcome, details, reason))
        elif kind == "path" and isinstance(reply, Status):
            action, details = pending[1], pending[2]
            ok = reply.code == StatusCode.OK
            reason = "" if ok else _status_text(reply)
            details = {"tool": self.tool, **details}
            outcome = "success" if ok else "failure"
            verdict.events.append(FileEvent(action, outcome, details, reason))
        return frame(body)

    def _follow_read(
        self, handle: bytes, offset: int, reply: Any, body: bytes, verdict: Verdict
    ) -> bytes:
        transfer = self._files.get(handle)
        if transfer is None:
            return frame(body)
        if isinstance(reply, Status):
            if reply.code == StatusCode.EOF and offset == transfer.next_offset:
                transfer.ended = True
            return frame(body)
        if not isinstance(reply, Data):
            return frame(body)
        cap = self._policy.max_bytes
        data = reply.data
        if cap is not None and offset + len(data) > cap:
            if offset >= cap:
                # Bytes past the cap never reach the client.
                message = f"pamgate: file larger than the {cap}-byte cap of {self._policy.source}"
                transfer.failed = "size cap"
                if handle not in self._capped:
                    self._capped.add(handle)
                    verdict.notices.append(message)
                    verdict.events.append(FileEvent(
                        "file.refused", "refused",
                        {"tool": self.tool, "operation": "read", "path": transfer.path},
                        reason=message,
                    ))  # fmt: skip
                return encode_status(reply.id, StatusCode.PERMISSION_DENIED, message)
            data = data[: cap - offset]
            transfer.add(offset, data)
            return encode_data(reply.id, data)
        transfer.add(offset, data)
        return frame(body)

    # -- the end --------------------------------------------------------------

    def _hostile(self, problem: str, side: str, verdict: Verdict) -> None:
        self._failed = True
        verdict.forward = b""
        message = f"pamgate: malformed SFTP stream from the {side} ({problem}); channel closed"
        verdict.abort = message
        verdict.events.append(
            FileEvent("file.refused", "refused", {"tool": self.tool, "operation": "protocol"},
                      reason=message)
        )  # fmt: skip

    def finish(self) -> list[FileEvent]:
        """Files still open when the channel closed: audited as incomplete."""
        events = []
        for transfer in self._files.values():
            transfer.failed = transfer.failed or "the channel closed with the file open"
            events.append(
                FileEvent("file.closed", "interrupted", transfer.summary(tool=self.tool),
                          reason=transfer.failed)
            )  # fmt: skip
        self._files.clear()
        return events


def _flag_names(flags: OpenFlags) -> str:
    return ",".join(flag.name.lower() for flag in OpenFlags if flag in flags and flag.name)


def _status_text(status: Status) -> str:
    try:
        name = StatusCode(status.code).name.lower()
    except ValueError:
        name = f"status {status.code}"
    return f"{name}: {status.message[:200]}" if status.message else name


class ScpAuditor:
    """Follows the legacy scp protocol in the direction file contents flow.

    Control lines are ``C<mode> <size> <name>`` (a file of ``size`` bytes
    follows, then one status byte), ``D<mode> 0 <name>`` / ``E`` (enter and
    leave a directory), ``T...`` (times) and ``\\x01``/``\\x02`` (warnings
    and errors). A file bigger than the cap, or a line that is not scp,
    aborts the channel: the stream cannot be answered mid-way.
    """

    def __init__(self, policy: TransferPolicy, transfer: ExecTransfer) -> None:
        self._policy = policy
        self._exec = transfer
        self._line = bytearray()
        self._dirs: list[str] = []
        self._file: _Transfer | None = None
        self._left = 0
        self._failed = False

    @property
    def tool(self) -> str:
        return "scp"

    def data(self, data: bytes) -> Verdict:
        """Follow a chunk of the data direction; the chunk passes unchanged unless aborted."""
        verdict = Verdict(forward=data)
        if self._failed:
            return Verdict()
        view = memoryview(data)
        while view:
            if self._file is not None:
                take = min(self._left, len(view))
                self._file.add(self._file.next_offset, bytes(view[:take]))
                self._left -= take
                view = view[take:]
                if self._left == 0:
                    verdict.events.append(
                        FileEvent("file.closed", "success", self._summary(self._file))
                    )
                    self._file = None
                continue
            if not self._line and view[0] == 0:
                view = view[1:]  # the status byte after a file
                continue
            end = bytes(view).find(b"\n")
            chunk = view if end < 0 else view[: end + 1]
            self._line += chunk
            view = view[len(chunk) :]
            if len(self._line) > MAX_SCP_LINE:
                return self._abort("an scp control line is too long", verdict)
            if end >= 0:
                problem = self._control(bytes(self._line[:-1]), verdict)
                self._line.clear()
                if problem:
                    return self._abort(problem, verdict)
        return verdict

    def _control(self, line: bytes, verdict: Verdict) -> str | None:
        if not line:
            return "an empty scp control line"
        kind, text = line[:1], line[1:].decode("utf-8", "backslashreplace")
        if kind in (b"\x01", b"\x02", b"T"):
            return None
        if kind == b"E":
            if self._dirs:
                self._dirs.pop()
            return None
        if kind not in (b"C", b"D"):
            return f"unexpected scp control line {line[:40]!r}"
        parts = text.split(" ", 2)
        if len(parts) != 3 or not parts[1].isdigit() or "/" in parts[2] or parts[2] in ("", ".."):
            return f"malformed scp control line {line[:80]!r}"
        if kind == b"D":
            self._dirs.append(parts[2])
            return None
        size = int(parts[1])
        path = "/".join([*self._dirs, parts[2]])
        details = {"tool": "scp", "path": path, "direction": self._exec.direction, "size": size,
                   "permissions": parts[0], "command_paths": list(self._exec.paths)}  # fmt: skip
        cap = self._policy.max_bytes
        if cap is not None and size > cap:
            message = f"pamgate: {path} is larger than the {cap}-byte cap of {self._policy.source}"
            verdict.events.append(FileEvent("file.refused", "refused", details, reason=message))
            return message
        verdict.events.append(FileEvent("file.opened", "success", details))
        self._file = _Transfer(path, self._exec.direction, whole=True)
        self._file.ended = True
        self._left = size
        if size == 0:
            verdict.events.append(FileEvent("file.closed", "success", self._summary(self._file)))
            self._file = None
        return None

    def _summary(self, transfer: _Transfer) -> dict[str, Any]:
        return transfer.summary(tool="scp")

    def _abort(self, message: str, verdict: Verdict) -> Verdict:
        self._failed = True
        if not message.startswith("pamgate:"):
            message = f"pamgate: {message}; channel closed"
            verdict.events.append(
                FileEvent("file.refused", "refused", {"tool": "scp", "operation": "protocol"},
                          reason=message)
            )  # fmt: skip
        verdict.forward = b""
        verdict.abort = message
        verdict.notices.append(message)
        return verdict

    def finish(self) -> list[FileEvent]:
        """A file cut off mid-way: audited as incomplete."""
        if self._file is None:
            return []
        transfer, self._file = self._file, None
        transfer.ended = False
        transfer.failed = f"the channel closed {self._left} bytes before the end of the file"
        return [FileEvent("file.closed", "interrupted", self._summary(transfer), transfer.failed)]


class StreamAuditor:
    """Counts an unparsed transfer stream (rsync) in its data direction, against the cap."""

    def __init__(self, policy: TransferPolicy, transfer: ExecTransfer, command: str) -> None:
        self._policy = policy
        self._exec = transfer
        self._command = command
        self._bytes = 0
        self._started = time.monotonic()
        self._opened = False
        self._failed = False

    @property
    def tool(self) -> str:
        return self._exec.tool

    def data(self, data: bytes) -> Verdict:
        """Count a chunk; past the cap, the channel is closed."""
        if self._failed:
            return Verdict()
        events = []
        if not self._opened:
            # The files are not parsed: the command is the record of what was asked.
            self._opened = True
            details = {**self._details(), "command": self._command[:500]}
            events.append(FileEvent("file.opened", "success", details))
        self._bytes += len(data)
        cap = self._policy.max_bytes
        if cap is not None and self._bytes > cap:
            self._failed = True
            message = (
                f"pamgate: {self.tool} stream larger than the {cap}-byte cap of "
                f"{self._policy.source}; channel closed"
            )
            events.append(FileEvent("file.refused", "refused", self._details(), reason=message))
            return Verdict(notices=[message], events=events, abort=message)
        return Verdict(forward=data, events=events)

    def _details(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "direction": self._exec.direction,
            "path": " ".join(self._exec.paths)[:500],
            "bytes": self._bytes,
            "seconds": round(time.monotonic() - self._started, 3),
            "sha256": None,
            # The rsync protocol is not parsed: completeness is the command's exit status.
            "complete": None,
        }

    def finish(self) -> list[FileEvent]:
        """The stream's total, once the channel has closed."""
        if not self._opened:
            return []
        return [FileEvent("file.closed", "success", self._details())]
