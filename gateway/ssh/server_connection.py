"""What both lanes' server connections do before and around sign-in, as sshd does it.

- **Startup slots**: each accepted connection takes a slot from its lane's
  :class:`~gateway.ssh.startups.StartupLimiter` (``MaxStartups``,
  ``PerSourceMaxStartups``) and gives it back when it signs in or closes. A
  connection refused a slot is told so in a line before the SSH version
  exchange (as sshd writes "Exceeded MaxStartups") and closed at once, before
  any key exchange work.
- **Repeated ``ssh-userauth`` service requests**: sshd accepts the service
  again and again until sign-in succeeds (``input_service_request`` in its
  ``auth2.c``); paramiko asks for it before each method it tries. asyncssh
  accepts it once and disconnects with "Unexpected service in service
  request" after that.
- **Session channels** open at once on the connection (``MaxSessions``),
  counted for the lanes' ``session_requested``.
- **Protocol-level disconnects** are logged (:func:`log_disconnect`).
- **The relay's hot path**: the packets go out batched and come in a packet
  at a time (:mod:`gateway.ssh.packet_io`), channel data packets are taken
  off the input and sealed without asyncssh's copies
  (:mod:`gateway.ssh.data_packets`, also when asyncssh's own ``send_packet``
  is asked for one); and asyncssh's empty ``SSH_MSG_IGNORE`` before every
  packet is not sent (it protects CBC modes, which the lanes do not offer:
  they take asyncssh's default ciphers, AES-GCM, ChaCha20-Poly1305 and
  AES-CTR; sshd sends no such packets either).

It relies on internals of asyncssh 2.24.1 (``_process_service_request``,
``_next_service``, ``_auth_in_progress``, ``_packet_handlers``, ``_channels``,
and for the hot path those :mod:`gateway.ssh.data_packets` names), pinned in
``pyproject.toml`` for the same reason as :mod:`gateway.ssh.partial_auth`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

import asyncssh
from asyncssh.constants import MSG_CHANNEL_DATA, MSG_IGNORE, MSG_SERVICE_REQUEST
from asyncssh.packet import SSHPacket, String

from gateway.ssh.data_packets import ChannelDataReceiver, send_channel_data_packet, sends_directly
from gateway.ssh.packet_io import BatchedTransport, feed_in_pieces
from gateway.ssh.startups import StartupLimiter

logger = logging.getLogger("pamgate.connection")
_EMPTY_STRING = (String(b""),)
#: asyncssh logs packets from this debug level up (its SSHLogger.packet).
PACKET_LOG_LEVEL = 3

USERAUTH_SERVICE = b"ssh-userauth"
#: Sent to a connection refused a startup slot, before closing it (sshd sends a line too).
REFUSED_LINE = b"pamgate: too many unauthenticated connections; try again later\r\n"


class LaneServerConnection(asyncssh.SSHServerConnection):
    """A lane's server connection: startup slots, repeated service requests, session count."""

    #: Set by the lane for each new connection (see :meth:`Lane.prepare_connection`).
    startups: StartupLimiter | None = None
    _slot_address: str | None = None
    _receiver: ChannelDataReceiver | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if peer else ""
        if self.startups is not None:
            refused = self.startups.admit(address)
            if refused:
                # Before asyncssh sets anything up: its later connection_lost finds
                # no transport and does nothing.
                self._cancel_login_timer()
                # uvloop's transports are not asyncio.WriteTransport subclasses: cast.
                cast("asyncio.WriteTransport", transport).write(REFUSED_LINE)
                transport.close()
                return
            self._slot_address = address
        self._receiver = ChannelDataReceiver(self, self._feed_asyncssh)
        super().connection_made(BatchedTransport(transport))  # type: ignore[arg-type]

    def data_received(self, data: bytes, datatype: asyncssh.DataType = None) -> None:
        if self._receiver is None:  # refused a startup slot: closing, asyncssh discards it
            self._feed_asyncssh(data)
        else:
            self._receiver.data_received(data)

    def _feed_asyncssh(self, data: bytes | memoryview) -> None:
        feed_in_pieces(super().data_received, data)

    # -- the relay's hot path (see the module docstring) ---------------------------

    def send_packet(self, pkttype: int, *args: bytes, handler: object = None) -> None:
        if pkttype == MSG_IGNORE and args == _EMPTY_STRING:
            return
        if pkttype == MSG_CHANNEL_DATA and sends_directly(self):
            send_channel_data_packet(self, args)
            return
        super().send_packet(pkttype, *args, handler=handler)  # type: ignore[arg-type]

    def _release_slot(self) -> None:
        if self._slot_address is not None and self.startups is not None:
            self.startups.release(self._slot_address)
        self._slot_address = None

    async def send_userauth_success(self) -> None:
        self._release_slot()
        await super().send_userauth_success()

    def _cleanup(self, exc: Exception | None) -> None:
        self._release_slot()
        super()._cleanup(exc)

    def _process_service_request(self, pkttype: int, pktid: int, packet: SSHPacket) -> None:
        if self._auth_in_progress and not self._auth_complete:
            # Until sign-in succeeds, ssh-userauth may be asked for again (as sshd allows);
            # any other service is still refused by asyncssh.
            self._next_service = USERAUTH_SERVICE
        super()._process_service_request(pkttype, pktid, packet)

    # asyncssh dispatches packets through a class-level table of its own functions,
    # so an override is seen only once it is in the table too.
    _packet_handlers = {
        **asyncssh.SSHServerConnection._packet_handlers,
        MSG_SERVICE_REQUEST: _process_service_request,
    }

    def open_sessions(self) -> int:
        """Session channels open (or closing) on this connection now."""
        return sum(
            isinstance(channel, asyncssh.SSHServerChannel) for channel in self._channels.values()
        )


def describe_disconnect(exc: Exception | None) -> str:
    """A short phrase for why a connection ended, for the log and the audit trail."""
    if exc is None:
        # asyncssh reports a clean disconnect by either side (SSH_DISCONNECT_BY_APPLICATION)
        # as no exception; the lanes say so themselves when they hang up.
        return "client disconnected"
    if isinstance(exc, asyncssh.ConnectionLost):
        reason = exc.reason or "connection lost"
        return "login timeout" if "timeout" in reason.lower() else "client disconnected"
    if isinstance(exc, asyncssh.DisconnectError):
        return f"{type(exc).__name__}: {exc.reason[:200]}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def log_disconnect(lane: str, source: str, exc: Exception | None, *, signed_in: bool) -> None:
    """Log how a connection ended: protocol errors and unfinished sign-ins at INFO."""
    why = describe_disconnect(exc)
    protocol_error = isinstance(exc, asyncssh.DisconnectError) and not isinstance(
        exc, asyncssh.ConnectionLost
    )
    if protocol_error or not signed_in:
        state = "signed in" if signed_in else "not signed in"
        logger.info("%s lane: connection from %s ended (%s): %s", lane, source, state, why)
    else:
        logger.debug("%s lane: connection from %s ended: %s", lane, source, why)
