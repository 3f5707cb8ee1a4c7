"""The SFTP wire protocol (version 3, as OpenSSH speaks it): framing, decoding, encoding.

Plain Python with no sockets, so the relay can parse both directions of an
``sftp`` subsystem channel and the tests can feed it hostile bytes.

:class:`PacketFramer` cuts a byte stream into packets, keeping at most one
partial packet of at most :data:`MAX_PACKET_LENGTH` bytes (OpenSSH's own
limit); anything longer, or a zero length, is a :class:`SftpProtocolError`.
:func:`decode_request` and :func:`decode_response` turn a packet body into
the messages the file-transfer auditor cares about; messages it does not
inspect (READLINK, NAME, ...) decode to :class:`Other` with their request id.
:func:`replies_allowed` says which reply types answer each request type
(the auditor refuses any other).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from gateway.errors import PamgateError

#: Longest packet accepted (the length field's value), as OpenSSH's sftp-server.
MAX_PACKET_LENGTH = 256 * 1024


class SftpProtocolError(PamgateError):
    """The bytes on an SFTP channel are not a valid SFTP packet stream."""


class PacketType(IntEnum):
    """SFTP v3 message types (draft-ietf-secsh-filexfer-02)."""

    INIT = 1
    VERSION = 2
    OPEN = 3
    CLOSE = 4
    READ = 5
    WRITE = 6
    LSTAT = 7
    FSTAT = 8
    SETSTAT = 9
    FSETSTAT = 10
    OPENDIR = 11
    READDIR = 12
    REMOVE = 13
    MKDIR = 14
    RMDIR = 15
    REALPATH = 16
    STAT = 17
    RENAME = 18
    READLINK = 19
    SYMLINK = 20
    STATUS = 101
    HANDLE = 102
    DATA = 103
    NAME = 104
    ATTRS = 105
    EXTENDED = 200
    EXTENDED_REPLY = 201


class OpenFlags(IntFlag):
    """``pflags`` of an OPEN request."""

    READ = 0x01
    WRITE = 0x02
    APPEND = 0x04
    CREAT = 0x08
    TRUNC = 0x10
    EXCL = 0x20


class StatusCode(IntEnum):
    """Codes of a STATUS reply."""

    OK = 0
    EOF = 1
    NO_SUCH_FILE = 2
    PERMISSION_DENIED = 3
    FAILURE = 4
    BAD_MESSAGE = 5
    NO_CONNECTION = 6
    CONNECTION_LOST = 7
    OP_UNSUPPORTED = 8


_ATTR_SIZE = 0x01
_ATTR_UIDGID = 0x02
_ATTR_PERMISSIONS = 0x04
_ATTR_ACMODTIME = 0x08
_ATTR_EXTENDED = 0x80000000
#: The file-type bits of ``permissions`` (``st_mode``), and those of a regular file.
_S_IFMT = 0o170000
_S_IFREG = 0o100000


class PacketFramer:
    """Cuts one direction of an SFTP stream into packet bodies (type byte onwards)."""

    def __init__(self, max_length: int = MAX_PACKET_LENGTH) -> None:
        self._max_length = max_length
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of a partial packet held back."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """The packets completed by ``data``; raises SftpProtocolError on a bad length."""
        self._buffer += data
        packets = []
        while len(self._buffer) >= 4:
            (length,) = struct.unpack_from(">I", self._buffer)
            if length == 0 or length > self._max_length:
                raise SftpProtocolError(
                    f"SFTP packet length {length} is outside 1..{self._max_length}"
                )
            if len(self._buffer) < 4 + length:
                break
            packets.append(bytes(self._buffer[4 : 4 + length]))
            del self._buffer[: 4 + length]
        return packets


class _Reader:
    """Reads SSH wire types from one packet body; running past its end is a protocol error."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self._pos = 0

    def _take(self, count: int) -> bytes:
        if self._pos + count > len(self._body):
            raise SftpProtocolError("truncated SFTP packet")
        chunk = self._body[self._pos : self._pos + count]
        self._pos += count
        return chunk

    def byte(self) -> int:
        return self._take(1)[0]

    def u32(self) -> int:
        return struct.unpack(">I", self._take(4))[0]

    def u64(self) -> int:
        return struct.unpack(">Q", self._take(8))[0]

    def string(self) -> bytes:
        return self._take(self.u32())

    def text(self) -> str:
        # Paths are bytes on the wire; undecodable ones are kept visible, not dropped.
        return self.string().decode("utf-8", "backslashreplace")

    def attrs(self) -> Attributes:
        flags = self.u32()
        size = self.u64() if flags & _ATTR_SIZE else None
        if flags & _ATTR_UIDGID:
            self._take(8)
        permissions = self.u32() if flags & _ATTR_PERMISSIONS else None
        if flags & _ATTR_ACMODTIME:
            self._take(8)
        if flags & _ATTR_EXTENDED:
            for _ in range(self.u32()):
                self.string()
                self.string()
        return Attributes(size=size, permissions=permissions)

    @property
    def remaining(self) -> int:
        return len(self._body) - self._pos


@dataclass(frozen=True)
class Attributes:
    """The parts of an ATTRS structure the audit records."""

    size: int | None = None
    permissions: int | None = None

    @property
    def regular_file_size(self) -> int | None:
        """The size, if these are the attributes of a regular file (not a link, pipe, device)."""
        if self.permissions is None or self.permissions & _S_IFMT != _S_IFREG:
            return None
        return self.size


# -- client to server ----------------------------------------------------------


@dataclass(frozen=True)
class Init:
    version: int


@dataclass(frozen=True)
class Open:
    id: int
    path: str
    flags: OpenFlags
    attrs: Attributes


@dataclass(frozen=True)
class Close:
    id: int
    handle: bytes


@dataclass(frozen=True)
class Read:
    id: int
    handle: bytes
    offset: int
    length: int


@dataclass(frozen=True)
class Write:
    id: int
    handle: bytes
    offset: int
    data: bytes


@dataclass(frozen=True)
class PathRequest:
    """REMOVE, MKDIR, RMDIR or SETSTAT: one path (and attributes, for MKDIR and SETSTAT)."""

    id: int
    type: PacketType
    path: str
    attrs: Attributes | None = None


@dataclass(frozen=True)
class HandleRequest:
    """FSTAT or READDIR: a request about one handle."""

    id: int
    type: PacketType
    handle: bytes


@dataclass(frozen=True)
class HandleSetstat:
    id: int
    handle: bytes
    attrs: Attributes


@dataclass(frozen=True)
class Rename:
    """RENAME, or the ``posix-rename@openssh.com`` extension (which may replace ``new``)."""

    id: int
    old: str
    new: str
    posix: bool = False


@dataclass(frozen=True)
class Extended:
    """Any other EXTENDED request: its name and, for those about a handle, the handle."""

    id: int
    name: str
    handle: bytes | None = None


@dataclass(frozen=True)
class Other:
    """A request or reply the auditor does not inspect; forwarded as it is.

    ``path`` is the first path of a request that names one (OPENDIR, STAT,
    LSTAT, READLINK, REALPATH, SYMLINK), for path scopes.
    """

    id: int
    type: int
    path: str | None = None


Request = (
    Init
    | Open
    | Close
    | Read
    | Write
    | PathRequest
    | HandleRequest
    | HandleSetstat
    | Rename
    | Extended
    | Other
)

POSIX_RENAME = "posix-rename@openssh.com"
#: OpenSSH's extensions whose first argument is a handle.
HANDLE_EXTENSIONS = frozenset({"fstatvfs@openssh.com", "fsync@openssh.com"})
_PATH_REQUESTS = frozenset(
    {
        PacketType.OPENDIR,
        PacketType.LSTAT,
        PacketType.STAT,
        PacketType.READLINK,
        PacketType.REALPATH,
        PacketType.SYMLINK,
    }
)


def decode_request(body: bytes) -> Request:
    """Decode a client-to-server packet body; raises SftpProtocolError if malformed."""
    reader = _Reader(body)
    kind = reader.byte()
    if kind == PacketType.INIT:
        return Init(reader.u32())
    request_id = reader.u32()
    if kind == PacketType.OPEN:
        return Open(request_id, reader.text(), OpenFlags(reader.u32() & 0x3F), reader.attrs())
    if kind == PacketType.CLOSE:
        return Close(request_id, reader.string())
    if kind == PacketType.READ:
        return Read(request_id, reader.string(), reader.u64(), reader.u32())
    if kind == PacketType.WRITE:
        return Write(request_id, reader.string(), reader.u64(), reader.string())
    if kind in (PacketType.REMOVE, PacketType.RMDIR):
        return PathRequest(request_id, PacketType(kind), reader.text())
    if kind in (PacketType.MKDIR, PacketType.SETSTAT):
        return PathRequest(request_id, PacketType(kind), reader.text(), reader.attrs())
    if kind == PacketType.FSETSTAT:
        return HandleSetstat(request_id, reader.string(), reader.attrs())
    if kind == PacketType.RENAME:
        return Rename(request_id, reader.text(), reader.text())
    if kind == PacketType.EXTENDED:
        name = reader.text()
        if name == POSIX_RENAME:
            return Rename(request_id, reader.text(), reader.text(), posix=True)
        if name in HANDLE_EXTENSIONS:
            return Extended(request_id, name, reader.string())
        return Extended(request_id, name)
    if kind in _PATH_REQUESTS:
        return Other(request_id, kind, reader.text())
    if kind in (PacketType.FSTAT, PacketType.READDIR):
        return HandleRequest(request_id, PacketType(kind), reader.string())
    raise SftpProtocolError(f"unknown SFTP request type {kind}")


# -- server to client ------------------------------------------------------------


@dataclass(frozen=True)
class Version:
    version: int


@dataclass(frozen=True)
class Status:
    id: int
    code: int
    message: str


@dataclass(frozen=True)
class Handle:
    id: int
    handle: bytes


@dataclass(frozen=True)
class Data:
    id: int
    data: bytes


@dataclass(frozen=True)
class AttrsReply:
    id: int
    attrs: Attributes


Response = Version | Status | Handle | Data | AttrsReply | Other


def decode_response(body: bytes) -> Response:
    """Decode a server-to-client packet body; raises SftpProtocolError if malformed."""
    reader = _Reader(body)
    kind = reader.byte()
    if kind == PacketType.VERSION:
        return Version(reader.u32())
    request_id = reader.u32()
    if kind == PacketType.STATUS:
        code = reader.u32()
        # Version 3 servers may omit the message and language tag.
        message = reader.text() if reader.remaining >= 4 else ""
        return Status(request_id, code, message)
    if kind == PacketType.HANDLE:
        return Handle(request_id, reader.string())
    if kind == PacketType.DATA:
        return Data(request_id, reader.string())
    if kind == PacketType.ATTRS:
        return AttrsReply(request_id, reader.attrs())
    if kind in (PacketType.NAME, PacketType.EXTENDED_REPLY):
        return Other(request_id, kind)
    raise SftpProtocolError(f"unknown SFTP reply type {kind}")


_STATUS_ONLY = frozenset({PacketType.STATUS})
_REPLIES: dict[int, frozenset[int]] = {
    PacketType.OPEN: frozenset({PacketType.HANDLE, PacketType.STATUS}),
    PacketType.OPENDIR: frozenset({PacketType.HANDLE, PacketType.STATUS}),
    PacketType.READ: frozenset({PacketType.DATA, PacketType.STATUS}),
    PacketType.READDIR: frozenset({PacketType.NAME, PacketType.STATUS}),
    PacketType.REALPATH: frozenset({PacketType.NAME, PacketType.STATUS}),
    PacketType.READLINK: frozenset({PacketType.NAME, PacketType.STATUS}),
    PacketType.STAT: frozenset({PacketType.ATTRS, PacketType.STATUS}),
    PacketType.LSTAT: frozenset({PacketType.ATTRS, PacketType.STATUS}),
    PacketType.FSTAT: frozenset({PacketType.ATTRS, PacketType.STATUS}),
    # OpenSSH's extensions answer with a STATUS, an EXTENDED_REPLY (statvfs, limits)
    # or a NAME (expand-path, home-directory); never with a handle or data.
    PacketType.EXTENDED: frozenset({PacketType.STATUS, PacketType.EXTENDED_REPLY, PacketType.NAME}),
}


def replies_allowed(request_type: int) -> frozenset[int]:
    """The reply types that may answer a request of ``request_type`` (draft-02, section 7).

    CLOSE, WRITE, REMOVE, MKDIR, RMDIR, SETSTAT, FSETSTAT, RENAME and SYMLINK
    are answered by a STATUS only.
    """
    return _REPLIES.get(request_type, _STATUS_ONLY)


def request_type(request: Request) -> int:
    """The packet type of a decoded request."""
    if isinstance(request, (PathRequest, HandleRequest, Other)):
        return request.type
    if isinstance(request, Rename):
        return PacketType.EXTENDED if request.posix else PacketType.RENAME
    return _REQUEST_TYPES[type(request)]


_REQUEST_TYPES: dict[type, int] = {
    Init: PacketType.INIT,
    Open: PacketType.OPEN,
    Close: PacketType.CLOSE,
    Read: PacketType.READ,
    Write: PacketType.WRITE,
    HandleSetstat: PacketType.FSETSTAT,
    Extended: PacketType.EXTENDED,
}


def reply_type(reply: Response) -> int:
    """The packet type of a decoded reply."""
    if isinstance(reply, Other):
        return reply.type
    return _REPLY_TYPES[type(reply)]


_REPLY_TYPES: dict[type, int] = {
    Version: PacketType.VERSION,
    Status: PacketType.STATUS,
    Handle: PacketType.HANDLE,
    Data: PacketType.DATA,
    AttrsReply: PacketType.ATTRS,
}


# -- encoding (the gateway's own replies) -----------------------------------------------


def _string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def frame(body: bytes) -> bytes:
    """A packet on the wire: the length, then ``body``."""
    return struct.pack(">I", len(body)) + body


def encode_status(request_id: int, code: StatusCode, message: str) -> bytes:
    """A framed STATUS reply (message in English, as OpenSSH sends it)."""
    body = struct.pack(">BII", PacketType.STATUS, request_id, code)
    return frame(body + _string(message.encode()) + _string(b"en"))


def encode_data(request_id: int, data: bytes) -> bytes:
    """A framed DATA reply."""
    return frame(struct.pack(">BI", PacketType.DATA, request_id) + _string(data))
