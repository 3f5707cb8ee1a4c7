"""Per-file audit and policy for an SFTP channel (also what ``scp`` uses since OpenSSH 9).

:class:`SftpAuditor` parses both directions of an ``sftp`` subsystem channel,
plain Python with no sockets. It refuses what the session's
:class:`~gateway.domain.transfer.policy.TransferPolicy` forbids with an SFTP
``PERMISSION_DENIED`` reply of its own, caps file sizes, and tracks each open
file: path, direction, bytes, and a running sha256 while the transfer is
sequential from offset 0. :meth:`SftpAuditor.finish` audits files still open
when the channel closed as incomplete.
"""

from __future__ import annotations

from typing import Any, Literal

from gateway.domain.transfer.policy import Direction, TransferMode, TransferPolicy
from gateway.ssh.transfer.events import FileEvent, FileTally, Verdict
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
        self._files: dict[bytes, FileTally] = {}
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
                self._files[reply.handle] = FileTally(opened.path, direction, whole)
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
