"""SFTP path scopes enforced on the paths the target resolves, not only on what the client wrote.

An NHI held to ``--sftp-path /srv/drop`` could otherwise leave it through a
symlink inside it (``/srv/drop/link -> /etc``), or ``..`` after one
(``/srv/drop/link/../etc/shadow`` is lexically inside, physically not), for
reads and for writes. Only the target knows where a path leads, so
:class:`SftpPathGuard`, in front of the channel's
:class:`~gateway.ssh.transfer.filter.TransferFilter`, asks it: before a
request that names a path reaches the target, the guard sends the target's
sftp-server a ``REALPATH`` of its own for that path (and, once, for each
allowed directory) with a request id no pending request uses, holds the
client's request and everything after it, and lets it through only if every
resolved path lies inside a resolved allowed directory. Otherwise the client
gets a ``PERMISSION_DENIED`` (or the target's own error, for a path that does
not resolve), a notice, and a ``file.refused`` event.

Why this is sound: OpenSSH's sftp-server answers requests one at a time, in
order, so nothing this channel sends can change the tree between the check
and the operation; its ``REALPATH`` follows every symlink, the last one too
(a dangling link resolves to where a create would land), and accepts a
missing last component (a new file). Under a path scope the auditor refuses
``SYMLINK`` and ``hardlink@openssh.com``, and a rename of a symlink that
leads outside fails the check, so an NHI cannot make an escape hatch through
SFTP; a hard link that already exists names a file inside the directory. The
limit: another process on the target (not this SFTP channel) changing the
tree between the check and the operation.

The held requests go out through ``send_to_target`` (the relay's upstream
channel), since the answer that releases them arrives on the way back.
"""

from __future__ import annotations

import collections
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from gateway.domain.transfer.policy import TransferPolicy
from gateway.ssh.transfer.events import FileEvent, Verdict
from gateway.ssh.transfer.sftp import (
    POSIX_RENAME,
    PacketFramer,
    PacketType,
    SftpProtocolError,
    StatusCode,
    encode_status,
    frame,
)

#: Client bytes held while a check is pending; more is a hostile client.
MAX_HELD_BYTES = 4 * 1024 * 1024
#: Client requests forwarded and not yet answered that the guard keeps track of.
MAX_OUTSTANDING = 8192
#: Requests whose one path the operation follows.
_ONE_PATH = frozenset({
    PacketType.OPEN, PacketType.LSTAT, PacketType.STAT, PacketType.OPENDIR, PacketType.READLINK,
    PacketType.REMOVE, PacketType.RMDIR, PacketType.MKDIR, PacketType.SETSTAT,
})  # fmt: skip


class AuditedSftp(Protocol):
    """The filter the guard stands in front of (a TransferFilter with an SftpAuditor)."""

    def to_target(self, data: bytes) -> bytes: ...

    def to_client(self, data: bytes) -> bytes: ...

    async def finished(self, exit_status: int | None) -> None: ...

    def apply(self, verdict: Verdict) -> bytes: ...


@dataclass
class _Check:
    """One held request waiting for the target's REALPATH answers."""

    body: bytes
    request_id: int
    paths: list[bytes]
    #: Private request id -> the path (or allowed directory) it resolves.
    asked: dict[int, tuple[str, bytes]] = field(default_factory=dict)
    #: Private request id -> resolved path, or the target's STATUS (code, message).
    answers: dict[int, bytes | tuple[int, str]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return len(self.answers) == len(self.asked)


class SftpPathGuard:
    """Holds each path request until the target's REALPATH shows it in scope (module docstring)."""

    def __init__(
        self, inner: AuditedSftp, policy: TransferPolicy, send_to_target: Callable[[bytes], None]
    ) -> None:
        assert policy.paths is not None
        self._inner = inner
        self._policy = policy
        self._send_to_target = send_to_target
        self._roots = [(path.rstrip("/") or "/").encode() for path in policy.paths]
        #: The allowed directories as the target resolves them (None: not asked yet).
        self._resolved_roots: list[bytes] | None = None
        self._from_client = PacketFramer()
        self._from_target = PacketFramer()
        self._held: collections.deque[bytes] = collections.deque()
        self._held_bytes = 0
        self._check: _Check | None = None
        self._outstanding: set[int] = set()
        self._next_id = 0xFFFF0000
        self._failed = False

    # -- the PayloadFilter interface -----------------------------------------

    def to_target(self, data: bytes) -> bytes:
        if self._failed:
            return self._inner.to_target(data)
        try:
            bodies = self._from_client.feed(data)
        except SftpProtocolError:
            return self._give_up(data)  # the auditor sees the same bytes and ends the channel
        for body in bodies:
            self._held.append(body)
            self._held_bytes += len(body)
        forward = self._drain()
        if self._held_bytes > MAX_HELD_BYTES:
            return self._hostile("too much data sent while a path was being checked")
        return forward

    def to_client(self, data: bytes) -> bytes:
        if self._failed:
            return self._inner.to_client(data)
        try:
            bodies = self._from_target.feed(data)
        except SftpProtocolError:
            self._failed = True
            return self._inner.to_client(data)
        out = bytearray()
        for body in bodies:
            reply_id = _reply_id(body)
            check = self._check
            if check is not None and reply_id in check.asked and reply_id not in check.answers:
                check.answers[reply_id] = _resolved(body)
                if check.complete:
                    self._check = None
                    self._decide(check)
                    self._send(self._drain())
                continue
            if reply_id is not None:
                self._outstanding.discard(reply_id)
            out += self._inner.to_client(frame(body))
        return bytes(out)

    async def finished(self, exit_status: int | None) -> None:
        await self._inner.finished(exit_status)

    # -- holding and releasing -------------------------------------------------

    def _drain(self) -> bytes:
        """Forward held requests up to the next one that needs a check; start that check."""
        out = bytearray()
        while self._held and self._check is None and not self._failed:
            body = self._held[0]
            paths = self._paths_to_check(body)
            if paths:
                out += self._start_check(body, paths)
                break
            self._release()
            out += self._forward(body)
        return bytes(out)

    def _release(self) -> bytes:
        body = self._held.popleft()
        self._held_bytes -= len(body)
        return body

    def _forward(self, body: bytes) -> bytes:
        forwarded = self._inner.to_target(frame(body))
        if forwarded and len(body) >= 5 and body[0] != PacketType.INIT:
            self._outstanding.add(struct.unpack_from(">I", body, 1)[0])
            if len(self._outstanding) > MAX_OUTSTANDING:
                return self._hostile(f"more than {MAX_OUTSTANDING} requests awaiting replies")
        return forwarded

    def _paths_to_check(self, body: bytes) -> list[bytes]:
        """The paths of a request that must be resolved; none if the auditor refuses it anyway."""
        if b"/" in self._roots:
            return []
        try:
            paths = _request_paths(body)
        except SftpProtocolError:
            return []  # the auditor reports the malformed request
        texts = [path.decode("utf-8", "backslashreplace") for path in paths]
        if any(self._policy.path_refused_because(text) for text in texts):
            return []  # out of scope as written: the auditor refuses it with that reason
        return paths

    def _start_check(self, body: bytes, paths: list[bytes]) -> bytes:
        check = _Check(body, struct.unpack_from(">I", body, 1)[0], paths)
        wanted = [("path", path) for path in paths]
        if self._resolved_roots is None:
            wanted += [("root", root) for root in self._roots]
        out = bytearray()
        for what, path in wanted:
            request_id = self._private_id()
            check.asked[request_id] = (what, path)
            out += frame(struct.pack(">BI", PacketType.REALPATH, request_id) + _string(path))
        self._check = check
        return bytes(out)

    def _private_id(self) -> int:
        """A request id that no forwarded request awaiting a reply uses."""
        taken = self._outstanding | (set(self._check.asked) if self._check else set())
        while True:
            self._next_id = (self._next_id + 1) & 0xFFFFFFFF
            if self._next_id not in taken:
                return self._next_id

    # -- the decision ---------------------------------------------------------------

    def _decide(self, check: _Check) -> None:
        """Release the checked request to the target, or refuse it to the client."""
        resolved: list[tuple[bytes, bytes | tuple[int, str]]] = []
        roots: list[bytes] = []
        for request_id, (what, path) in check.asked.items():
            answer = check.answers[request_id]
            if what == "root":
                # An allowed directory that does not resolve allows nothing.
                if isinstance(answer, bytes):
                    roots.append(answer)
            else:
                resolved.append((path, answer))
        if self._resolved_roots is None:
            self._resolved_roots = roots
        body = self._release()
        for path, answer in resolved:
            shown = path.decode("utf-8", "backslashreplace")[:200]
            if not isinstance(answer, bytes):
                code, message = answer
                self._refuse(check, shown, code, f"{shown!r} cannot be resolved on the target "
                             f"({message or f'status {code}'})")  # fmt: skip
                return
            if not any(_inside(answer, root) for root in self._resolved_roots):
                where = answer.decode("utf-8", "backslashreplace")[:200]
                self._refuse(check, shown, StatusCode.PERMISSION_DENIED,
                             f"{shown!r} resolves to {where!r}, outside the allowed paths "
                             f"({', '.join(self._policy.paths or ())})")  # fmt: skip
                return
        self._send(self._forward(body))

    def _send(self, data: bytes) -> None:
        if data:
            self._send_to_target(data)

    def _refuse(self, check: _Check, path: str, code: int, why: str) -> None:
        message = f"pamgate: {why} ({self._policy.source})"
        details = {"tool": "sftp", "operation": PacketType(check.body[0]).name.lower(),
                   "path": path}  # fmt: skip
        self._inner.apply(Verdict(
            reply=encode_status(check.request_id, StatusCode(code) if code in _CODES
                                else StatusCode.FAILURE, message),
            notices=[message],
            events=[FileEvent("file.refused", "refused", details, reason=message)],
        ))  # fmt: skip

    def _hostile(self, problem: str) -> bytes:
        self._failed = True
        self._held.clear()
        message = f"pamgate: {problem}; channel closed"
        details = {"tool": "sftp", "operation": "protocol"}
        return self._inner.apply(Verdict(
            abort=message, events=[FileEvent("file.refused", "refused", details, reason=message)],
        ))  # fmt: skip

    def _give_up(self, data: bytes) -> bytes:
        self._failed = True
        held = b"".join(frame(body) for body in self._held)
        self._held.clear()
        return self._inner.to_target(held + data)


_CODES = frozenset(code.value for code in StatusCode)


def _inside(path: bytes, root: bytes) -> bool:
    return root == b"/" or path == root or path.startswith(root + b"/")


def _string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def _request_paths(body: bytes) -> list[bytes]:
    """The paths a client request names and the operation will use (raw bytes)."""
    kind = body[0]
    strings = _Strings(body, 5)
    if kind in _ONE_PATH:
        return [strings.next()]
    if kind == PacketType.RENAME:
        return [strings.next(), strings.next()]
    if kind == PacketType.EXTENDED and strings.next() == POSIX_RENAME.encode():
        return [strings.next(), strings.next()]
    return []


def _reply_id(body: bytes) -> int | None:
    if len(body) < 5 or body[0] == PacketType.VERSION:
        return None
    return int(struct.unpack_from(">I", body, 1)[0])


def _resolved(body: bytes) -> bytes | tuple[int, str]:
    """A REALPATH answer: the resolved path, or the target's STATUS (code, message)."""
    try:
        if body[0] == PacketType.NAME:
            strings = _Strings(body, 5)
            count = strings.u32()
            if count == 1:
                return strings.next()
            return (StatusCode.FAILURE, f"{count} names for one path")
        if body[0] == PacketType.STATUS:
            strings = _Strings(body, 5)
            code = strings.u32()
            message = strings.next().decode("utf-8", "replace")[:200] if strings.left else ""
            return (code, message)
    except SftpProtocolError:
        pass
    return (StatusCode.FAILURE, "malformed REALPATH answer")


class _Strings:
    """Reads SSH strings and uint32s from a packet body, from an offset."""

    def __init__(self, body: bytes, offset: int) -> None:
        self._body, self._pos = body, offset

    @property
    def left(self) -> int:
        return len(self._body) - self._pos

    def u32(self) -> int:
        if self.left < 4:
            raise SftpProtocolError("truncated SFTP packet")
        value = int(struct.unpack_from(">I", self._body, self._pos)[0])
        self._pos += 4
        return value

    def next(self) -> bytes:
        length = self.u32()
        if self.left < length:
            raise SftpProtocolError("truncated SFTP packet")
        value = self._body[self._pos : self._pos + length]
        self._pos += length
        return value
