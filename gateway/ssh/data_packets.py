"""Channel data packets on the relay's hot path: framed, opened and sealed without copies.

asyncssh (2.24.1, pinned) handles every packet the same general way, and for
a 32 KiB data packet that is about ten copies of the data: into and out of
its input buffer, joined for the cipher, sliced out of the plaintext, out of
the packet; on the way out into a ``bytearray`` send buffer, behind a length,
behind the channel number, joined with the padding. At a gigabyte relayed,
those copies and the Python around them cost the gateway more CPU than the
ciphers (py-spy, ``bench/``). This module does the same work for the packets
that matter, ``SSH_MSG_CHANNEL_DATA`` and the ``SSH_MSG_CHANNEL_WINDOW_ADJUST``
that keeps it flowing, with the copies the ciphers need and one more, and
leaves every other packet to asyncssh:

- **In**: :class:`ChannelDataReceiver` stands before a connection's
  ``data_received``. While the connection is signed in and between packets,
  it opens each whole packet of a read where it lies. A data packet for an
  open channel, within its window, goes straight to the channel's own
  ``_accept_data``, which keeps flow control, window adjusts and delivery as
  asyncssh does; a window adjust opens the channel's window and flushes it.
  Anything else (another packet type, a packet that does not verify, one
  asyncssh would refuse, a partial packet asyncssh already holds) is handed
  to asyncssh as it came, before any state changed: the packet is opened
  *speculatively*, and its cipher moves on only once the packet is taken.
- **Out**: :func:`write_channel_data` queues stdout in the channel's own send
  buffer as the bytes written (asyncssh copies them into a ``bytearray``),
  and :func:`flush_send_buffer`, which takes the place of the channel's
  ``_flush_send_buf``, builds each packet with one join and seals it.
  :func:`send_channel_data_packet` also seals a data packet that asyncssh's
  own ``send_packet`` was asked for (the lanes' connection class overrides
  it: :mod:`gateway.ssh.server_connection`).

Both sides apply only when asyncssh would do nothing more than this: keys in
place, the gateway's own AEAD cipher classes (:mod:`gateway.ssh.cipher_packets`)
to open packets, no compression, no rekey due, no debug logging of data. Data
packets sent this way go without the empty ``SSH_MSG_IGNORE`` asyncssh puts
before each packet it sends: a countermeasure for CBC ciphers, which neither
the lanes nor the connections to targets offer. Speculative opening costs a
second decryption for a packet not taken here (asyncssh opens it again):
requests and EOFs are small, and a peer flooding large
``SSH_MSG_IGNORE`` packets pays the same to seal them. The state they keep
is asyncssh's own (sequence numbers, rekey byte counts, windows), read and
updated as its ``_recv_packet``, ``send_packet`` and channel methods do.
``tests/unit/test_data_packets.py`` checks them against asyncssh on a real
connection, with rekeys, odd read sizes, interleaved requests and tampering.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any, cast

from asyncssh import logging as asyncssh_logging
from asyncssh.channel import SSHChannel
from asyncssh.connection import SSHConnection
from asyncssh.constants import (
    MSG_CHANNEL_DATA,
    MSG_CHANNEL_EOF,
    MSG_CHANNEL_EXTENDED_DATA,
    MSG_CHANNEL_WINDOW_ADJUST,
)
from asyncssh.misc import DisconnectError
from asyncssh.packet import SSHPacketHandler, String, UInt32

from gateway.ssh.cipher_packets import LENGTH_SIZE, TAG_SIZE, AeadPackets

#: asyncssh logs data sizes from this debug level up (its channel's logger.debug2).
DATA_LOG_LEVEL = 2
#: The channel data packet's fixed head after the padding length: type, channel, data length.
_DATA_HEAD = 1 + 4 + 4
#: RFC 4253 6: at least 4 bytes of random padding.
_MIN_PADDING = 4
#: asyncssh's receive states: between packets, and inside one (its header read).
_RECV_PACKET_HEADER = SSHConnection._recv_pkthdr  # noqa: SLF001
_RECV_PACKET_REST = SSHConnection._recv_packet  # noqa: SLF001


def _logging_data() -> bool:
    return asyncssh_logging.logger._debug_level >= DATA_LOG_LEVEL  # noqa: SLF001


def sends_directly(conn: Any) -> bool:
    """True when asyncssh's ``send_packet`` would only seal and send a data packet:
    signed in, keys in place, no rekey due, no compression, no packet logging."""
    return (
        conn._auth_complete
        and conn._kex_complete
        and not conn._deferred_packets  # nothing may overtake them
        and conn._send_encryption is not None
        and not conn._compressor
        and conn._rekey_bytes_sent < conn._rekey_bytes
        and not (conn._rekey_seconds and time.monotonic() >= conn._rekey_time)
        and not _logging_data()
    )


def send_channel_data_packet(conn: Any, parts: tuple[bytes | bytearray | memoryview, ...]) -> None:
    """Seal and send one ``SSH_MSG_CHANNEL_DATA`` packet whose payload after the type is
    ``parts`` joined: padded as asyncssh pads, sequence and rekey counts kept as it keeps them.
    The caller has checked :func:`sends_directly`."""
    size = 1 + sum(map(len, parts))
    padding = -(conn._send_enchdrlen + size) % conn._send_blocksize
    if padding < _MIN_PADDING:
        padding += conn._send_blocksize
    packet = b"".join((bytes((padding, MSG_CHANNEL_DATA)), *parts, os.urandom(padding)))
    seq = conn._send_seq
    sealed, mac = conn._send_encryption.encrypt_packet(seq, len(packet).to_bytes(4, "big"), packet)
    conn._send(sealed + mac)
    conn._send_seq = (seq + 1) & 0xFFFFFFFF
    conn._rekey_bytes_sent += len(packet)


class QueuedData:
    """Bytes written to a channel and not sent yet, without asyncssh's ``bytearray`` copy:
    the pieces sent are views of the bytes as written."""

    __slots__ = ("_data", "_start")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._start = 0

    def __len__(self) -> int:
        return len(self._data) - self._start

    def take(self, size: int) -> memoryview:
        """The next ``size`` bytes, as a view; they count as sent."""
        piece = memoryview(self._data)[self._start : self._start + size]
        self._start += size
        return piece


def write_channel_data(chan: SSHChannel[bytes], data: bytes) -> None:
    """``chan.write(data)`` for stdout, queued and sent without asyncssh's copies.

    The data joins the channel's own send buffer (so it keeps its place among
    stderr, EOF and close, and the buffer's high-water mark still pauses the
    writer), and the channel's buffer is flushed by :func:`flush_send_buffer`
    from then on, window adjusts included.
    """
    channel: Any = chan
    if channel._send_state != "open" or channel._encoding:
        chan.write(data)  # asyncssh's errors and encodings
        return
    if not data:
        return
    if not isinstance(data, bytes):
        data = bytes(data)  # queued as it is now: a bytearray could change before it is sent
    if "_flush_send_buf" not in vars(channel):
        channel._flush_send_buf = partial(flush_send_buffer, channel)
    channel._send_buf.append((QueuedData(data), None))
    channel._send_buf_len += len(data)
    channel._flush_send_buf()


def flush_send_buffer(chan: Any) -> None:
    """asyncssh's ``SSHChannel._flush_send_buf`` (2.24.1), which sends what the window lets
    through, then EOF or close once all is sent; with :class:`QueuedData` sent directly."""
    while chan._send_buf and chan._send_window:
        buf, datatype = chan._send_buf[0]
        size = min(chan._send_window, chan._send_pktsize, len(buf))
        if isinstance(buf, QueuedData):
            data: bytes | bytearray | memoryview = buf.take(size)
            if not buf:
                del chan._send_buf[0]
        elif len(buf) > size:
            data = buf[:size]
            del buf[:size]
        else:
            data = buf
            del chan._send_buf[0]
        chan._send_buf_len -= size
        chan._send_window -= size
        conn = chan._conn
        if datatype is not None:
            # String takes any buffer (it adds it to its length prefix); typed for bytes.
            chan.send_packet(MSG_CHANNEL_EXTENDED_DATA, UInt32(datatype), String(cast(bytes, data)))
        elif conn is not None and chan._send_chan is not None and sends_directly(conn):
            send_channel_data_packet(
                conn, (chan._send_chan.to_bytes(4, "big"), size.to_bytes(4, "big"), data)
            )
        else:
            chan.send_packet(MSG_CHANNEL_DATA, String(cast(bytes, data)))
    chan._pause_resume_writing()
    if not chan._send_buf:
        if chan._send_state == "eof_pending":
            chan.send_packet(MSG_CHANNEL_EOF)
            chan._send_state = "eof"
        elif chan._send_state == "close_pending":
            chan._close_send()


class ChannelDataReceiver:
    """Takes a connection's channel data packets off its input; gives asyncssh the rest.

    Call :meth:`data_received` with every read, instead of the connection's own.
    ``feed`` is how bytes reach asyncssh (its ``data_received``, or a wrapper that
    hands it large reads in pieces).
    """

    def __init__(self, conn: SSHConnection, feed: Callable[[bytes | memoryview], None]) -> None:
        self._conn: Any = conn
        self._feed = feed
        #: The start of a packet this receiver will open once the rest has come.
        self._partial = b""

    def data_received(self, data: bytes) -> None:
        """A read from the socket: whole data packets taken here, the rest fed to asyncssh."""
        conn = self._conn
        conn._reset_keepalive_timer()  # as asyncssh does on every read
        try:
            rest = self._take_packets(data)
        except DisconnectError as exc:
            # What asyncssh's _recv_data does with an error raised while handling a packet.
            conn._send_disconnect(exc.code, exc.reason, exc.lang)
            conn._force_close(exc)
            return
        except Exception:  # noqa: BLE001 - as asyncssh's _recv_data: any other error closes
            conn.internal_error()
            return
        if rest:
            self._feed(rest)

    def _take_packets(self, data: bytes) -> bytes | memoryview:
        """Take the whole packets of ``data`` one by one (a data packet here, any other by
        asyncssh); return what asyncssh must be given as it stands."""
        conn = self._conn
        whole = memoryview(data)
        view = self._complete_partial(whole) if self._partial else self._top_up_asyncssh(whole)
        if view is None:
            return b""
        position = 0
        end = len(view)
        while position < end and self._between_packets():
            encryption: AeadPackets = conn._recv_encryption
            if end - position < LENGTH_SIZE:
                self._partial = bytes(view[position:])
                return b""
            size = self._packet_size(encryption, view[position : position + LENGTH_SIZE])
            if size is None:
                break  # asyncssh refuses it
            if end - position < size:
                self._partial = bytes(view[position:])
                return b""
            self._open(encryption, view[position : position + size])
            position += size
        if conn._transport is None:
            return b""  # closed while handling a packet: nothing more is read
        return view[position:]

    def _open(self, encryption: AeadPackets, packet: memoryview) -> None:
        """One whole packet: a data packet taken here, any other given to asyncssh."""
        if not self._take(encryption, packet):
            self._feed(packet)

    def _complete_partial(self, view: memoryview) -> memoryview | None:
        """Finish the packet whose start is held, with the bytes it needs from ``view``;
        return the rest of ``view`` (None: the packet is still not whole)."""
        partial, self._partial = self._partial, b""
        if not self._between_packets():
            self._feed(partial)  # asyncssh takes over from the packet's start
            return view
        head = partial[:LENGTH_SIZE] + bytes(view[: max(LENGTH_SIZE - len(partial), 0)])
        if len(head) < LENGTH_SIZE:
            self._partial = head
            return None
        encryption: AeadPackets = self._conn._recv_encryption
        size = self._packet_size(encryption, memoryview(head))
        if size is None:
            self._feed(partial)
            return view
        needed = size - len(partial)
        if needed > len(view):
            self._partial = partial + bytes(view)
            return None
        self._open(encryption, memoryview(partial + bytes(view[:needed])))
        return view[needed:]

    def _top_up_asyncssh(self, view: memoryview) -> memoryview:
        """Give asyncssh just enough to finish a packet it holds part of; return the rest."""
        conn = self._conn
        for _ in range(2):  # the header, then the packet's remainder
            if conn._transport is None:
                return view
            handler = getattr(conn._recv_handler, "__func__", None)
            if handler is _RECV_PACKET_HEADER:
                if not conn._inpbuf:
                    return view  # between packets
                needed = conn._recv_blocksize - len(conn._inpbuf)
            elif handler is _RECV_PACKET_REST:
                needed = 4 + conn._pktlen + conn._recv_macsize - conn._recv_blocksize
                needed -= len(conn._inpbuf)
            else:
                return view  # mid-exchange (version, an awaited handler): all to asyncssh
            if needed > len(view):
                return view
            self._feed(view[:needed])
            view = view[needed:]
        return view

    def _between_packets(self) -> bool:
        """True when the next bytes start a packet this receiver may open."""
        conn = self._conn
        return (
            conn._transport is not None
            and not conn._inpbuf
            and getattr(conn._recv_handler, "__func__", None) is _RECV_PACKET_HEADER
            and isinstance(conn._recv_encryption, AeadPackets)
            and conn._recv_macsize == TAG_SIZE
            and conn._decompressor is None
            and conn._auth_complete
            and not _logging_data()
        )

    def _packet_size(self, encryption: AeadPackets, length: memoryview) -> int | None:
        """The whole packet's size on the wire, or None for a length asyncssh must refuse."""
        conn = self._conn
        body = encryption.packet_length(conn._recv_seq, length)
        if body > conn._max_recv_pktlen:
            return None
        return LENGTH_SIZE + body + TAG_SIZE

    def _take(self, encryption: AeadPackets, sealed: memoryview) -> bool:
        """Open ``sealed``; if it is a data packet (or a window adjust) the channel accepts
        as it stands, handle it and move the connection on. Otherwise change nothing: False."""
        conn = self._conn
        seq = conn._recv_seq
        plain = encryption.open_packet(seq, sealed)
        # Both packets have a 9-byte payload head: type, channel, then a length or an adjust.
        if plain is None or len(plain) < 1 + _DATA_HEAD or plain[0] < _MIN_PADDING:
            return False  # asyncssh refuses what it refuses
        end = len(plain) - plain[0]
        kind = plain[1]
        if end < 1 + _DATA_HEAD or kind not in _HANDLED:
            return False
        channel: Any = conn._channels.get(int.from_bytes(plain[2:6], "big"))
        if (
            channel is None
            or type(channel).process_packet is not _PROCESS_PACKET
            or type(channel)._packet_handlers.get(kind) is not _HANDLED[kind]
        ):
            return False  # asyncssh handles it (and raises what it raises)
        value = int.from_bytes(plain[6:10], "big")
        if kind == MSG_CHANNEL_DATA:
            if (
                channel._recv_state != "open"
                or 1 + _DATA_HEAD + value != end
                or value > channel._recv_window
            ):
                return False
            encryption.packet_taken()
            channel._accept_data(plain[1 + _DATA_HEAD : end])
        else:  # as asyncssh's _process_window_adjust
            if channel._recv_state not in _ADJUSTABLE or end != 1 + _DATA_HEAD:
                return False
            encryption.packet_taken()
            channel._send_window += value
            channel._flush_send_buf()
        conn._finish_recv_packet(kind, seq)
        return True


#: How asyncssh's channels handle the packets taken here (a channel class that differs
#: is left to asyncssh), and the channel states in which it accepts a window adjust.
_PROCESS_PACKET = SSHPacketHandler.process_packet
_HANDLED = {
    kind: SSHChannel._packet_handlers[kind]  # noqa: SLF001
    for kind in (MSG_CHANNEL_DATA, MSG_CHANNEL_WINDOW_ADJUST)
}
_ADJUSTABLE = frozenset({"open", "eof_pending", "eof"})
