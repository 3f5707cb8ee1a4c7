"""The socket side of an SSH connection, shaped for bulk relaying.

asyncssh (2.24.1, pinned) is written for correctness, not for moving
gigabytes; two of its habits dominated a relayed session's cost, and both
are fixed here, around it rather than inside it:

- **Writes**: each packet it sends is its own ``transport.write``: a 32 KiB
  data packet, and before it an empty ``SSH_MSG_IGNORE``. On an idle socket
  each write is a ``send`` system call. :class:`BatchedTransport` keeps the
  packets written during one turn of the event loop and hands them over
  together at its end (``writelines``: uvloop sends them with one
  ``writev``, without joining them). Nothing waits longer than the rest of
  the current turn, so a keystroke's echo is not delayed.
- **Reads**: it keeps unparsed input as ``bytes`` and, for every packet it
  takes off the front, copies the rest of the buffer. uvloop reads up to
  256 KiB at once, eight packets, so each byte received was copied about
  eight times. :func:`feed_in_pieces` hands it a large read in pieces of
  one packet or so, which keeps that rest small.

:class:`UpstreamTCP` gives the gateway's connections to targets the same
shape: asyncssh's ``connect`` takes it as its ``tunnel``, the documented way
to supply the byte stream a client connection runs over. On both kinds of
connection, a read first goes to a
:class:`~gateway.ssh.data_packets.ChannelDataReceiver`, which takes the
channel data packets itself; what it leaves reaches asyncssh in pieces.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any, cast

from asyncssh.connection import SSHConnection

from gateway.ssh.data_packets import ChannelDataReceiver

#: Largest piece of a read handed to asyncssh at once: about one full data packet
#: (32 KiB of data with its headers, padding and MAC).
INPUT_PIECE = 36 * 1024


class BatchedTransport:
    """Wraps a connection's transport so the packets of one loop turn go out in one write.

    Only what asyncssh's connection calls to send is wrapped (``write``,
    ``close``, ``abort``); everything else is the transport's own.
    """

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.WriteTransport", transport)
        self._pending: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        """Hand the packets written so far to the socket."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if not self._transport.is_closing():
            self._transport.writelines(pending)

    def close(self) -> None:
        # A disconnect packet written just before close must still go out.
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        # As unbatched: what was written is tried at once (a disconnect message before
        # asyncssh's abort), and what the socket does not take then is dropped.
        self.flush()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def feed_in_pieces(data_received: Callable[[bytes], None], data: bytes | memoryview) -> None:
    """Give ``data`` to an asyncssh connection's ``data_received`` a packet or so at a time.

    asyncssh appends what it is given to its bytes buffer, and bytes plus a
    memoryview make bytes: views are handed over as they are.
    """
    if len(data) <= INPUT_PIECE:
        data_received(cast(bytes, data))
        return
    view = memoryview(data)
    for start in range(0, len(data), INPUT_PIECE):
        data_received(cast(bytes, view[start : start + INPUT_PIECE]))


class _UpstreamProtocol(asyncio.Protocol):
    """Stands between the TCP socket and asyncssh's client connection (see the module doc)."""

    def __init__(self, connection: asyncio.Protocol) -> None:
        self.connection = connection
        self._receiver = ChannelDataReceiver(
            cast(SSHConnection, connection), partial(feed_in_pieces, connection.data_received)
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connection.connection_made(BatchedTransport(transport))  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self._receiver.data_received(data)

    def eof_received(self) -> bool | None:
        return self.connection.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connection.connection_lost(exc)

    def pause_writing(self) -> None:
        self.connection.pause_writing()

    def resume_writing(self) -> None:
        self.connection.resume_writing()


class UpstreamTCP:
    """A plain TCP connection to a target, for asyncssh's ``connect(tunnel=...)``."""

    async def create_connection(
        self, session_factory: Callable[[], asyncio.Protocol], remote_host: str, remote_port: int
    ) -> tuple[asyncio.BaseTransport, asyncio.Protocol]:
        """Connect to the target; return the transport and asyncssh's connection."""
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_connection(
            lambda: _UpstreamProtocol(session_factory()), remote_host, remote_port
        )
        return transport, protocol.connection

    def close(self) -> None:
        """Nothing to close: each connection is closed by asyncssh through its transport."""

    async def wait_closed(self) -> None:
        """Nothing to wait for (see :meth:`close`)."""
