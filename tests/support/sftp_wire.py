"""SFTP v3 packets built byte by byte, as a hostile client (or target) would send them.

The builders write exactly the bytes asked for, with no checks, so tests can
send reused request ids, handles never issued, odd flags and split frames.
"""

from __future__ import annotations

import struct

from gateway.ssh.transfer.sftp import OpenFlags, PacketType, StatusCode, frame

#: The file-type bits of a regular file, in an ATTRS ``permissions`` field.
S_IFREG = 0o100000
_ATTR_SIZE = 0x01
_ATTR_PERMISSIONS = 0x04


def s(value: bytes | str) -> bytes:
    """An SSH ``string``: a length, then the bytes."""
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack(">I", len(raw)) + raw


def packet(kind: int, request_id: int | None, payload: bytes = b"") -> bytes:
    head = bytes([kind]) + (struct.pack(">I", request_id) if request_id is not None else b"")
    return frame(head + payload)


def init(version: int = 3) -> bytes:
    return packet(PacketType.INIT, None, struct.pack(">I", version))


def version_reply(version: int = 3) -> bytes:
    return packet(PacketType.VERSION, None, struct.pack(">I", version))


def open_request(request_id: int, path: str, flags: OpenFlags) -> bytes:
    return packet(PacketType.OPEN, request_id, s(path) + struct.pack(">II", flags, 0))


def close_request(request_id: int, handle: bytes) -> bytes:
    return packet(PacketType.CLOSE, request_id, s(handle))


def read_request(request_id: int, handle: bytes, offset: int, length: int) -> bytes:
    return packet(PacketType.READ, request_id, s(handle) + struct.pack(">QI", offset, length))


def write_request(request_id: int, handle: bytes, offset: int, data: bytes) -> bytes:
    return packet(PacketType.WRITE, request_id, s(handle) + struct.pack(">Q", offset) + s(data))


def path_request(kind: PacketType, request_id: int, path: str) -> bytes:
    """STAT, LSTAT, OPENDIR, REMOVE, RMDIR, REALPATH...: one path."""
    return packet(kind, request_id, s(path))


def mkdir_request(request_id: int, path: str) -> bytes:
    return packet(PacketType.MKDIR, request_id, s(path) + struct.pack(">I", 0))


def fstat_request(request_id: int, handle: bytes) -> bytes:
    return packet(PacketType.FSTAT, request_id, s(handle))


def handle_reply(request_id: int, handle: bytes) -> bytes:
    return packet(PacketType.HANDLE, request_id, s(handle))


def status_reply(request_id: int, code: StatusCode, message: str = "") -> bytes:
    return packet(PacketType.STATUS, request_id, struct.pack(">I", code) + s(message) + s(""))


def data_reply(request_id: int, data: bytes) -> bytes:
    return packet(PacketType.DATA, request_id, s(data))


def attrs_reply(request_id: int, size: int, mode: int = S_IFREG | 0o644) -> bytes:
    flags = _ATTR_SIZE | _ATTR_PERMISSIONS
    return packet(PacketType.ATTRS, request_id, struct.pack(">IQI", flags, size, mode))


def name_reply(request_id: int, *names: str) -> bytes:
    body = struct.pack(">I", len(names))
    for name in names:
        body += s(name) + s(name) + struct.pack(">I", 0)
    return packet(PacketType.NAME, request_id, body)


def split_packets(stream: bytes) -> list[bytes]:
    """Whole packets (with their length) of a stream that holds only whole packets."""
    packets = []
    while stream:
        (length,) = struct.unpack_from(">I", stream)
        packets.append(stream[: 4 + length])
        stream = stream[4 + length :]
    return packets
