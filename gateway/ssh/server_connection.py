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
  at a time (:mod:`gateway.ssh.packet_io`); asyncssh's empty
  ``SSH_MSG_IGNORE`` before every packet is not sent (it protects CBC modes,
  which the lanes do not offer: they take asyncssh's default ciphers,
  AES-GCM, ChaCha20-Poly1305 and AES-CTR; sshd sends no such packets
  either); and a channel data packet is sealed with one copy
  of its data instead of four, when asyncssh's ``send_packet`` would do
  nothing else (no rekey due, no compression, no packet log).

It relies on internals of asyncssh 2.24.1 (``_process_service_request``,
``_next_service``, ``_auth_in_progress``, ``_packet_handlers``, ``_channels``,
and for the hot path ``send_packet``'s state: ``_send_seq``, ``_send_encryption``,
``_rekey_*``), pinned in ``pyproject.toml`` for the same reason as
:mod:`gateway.ssh.partial_auth`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import cast

import asyncssh
from asyncssh import logging as asyncssh_logging
from asyncssh.constants import MSG_CHANNEL_DATA, MSG_IGNORE, MSG_SERVICE_REQUEST
from asyncssh.encryption import Encryption
from asyncssh.packet import SSHPacket, String

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
        super().connection_made(BatchedTransport(transport))  # type: ignore[arg-type]

    def data_received(self, data: bytes, datatype: asyncssh.DataType = None) -> None:
        feed_in_pieces(super().data_received, data)

    # -- the relay's hot path (see the module docstring) ---------------------------

    def send_packet(self, pkttype: int, *args: bytes, handler: object = None) -> None:
        if pkttype == MSG_IGNORE and args == _EMPTY_STRING:
            return
        if pkttype == MSG_CHANNEL_DATA and self._sends_data_directly():
            self._send_channel_data(args)
            return
        super().send_packet(pkttype, *args, handler=handler)  # type: ignore[arg-type]

    def _sends_data_directly(self) -> bool:
        """True when asyncssh's send_packet would do no more than seal and send the packet:
        signed in, keys in place, no rekey due, no compression, no packet logging."""
        return (
            self._auth_complete
            and self._kex_complete
            and self._send_encryption is not None
            and not self._compressor
            and self._rekey_bytes_sent < self._rekey_bytes
            and not (self._rekey_seconds and time.monotonic() >= self._rekey_time)
            and asyncssh_logging.logger._debug_level < PACKET_LOG_LEVEL  # noqa: SLF001
        )

    def _send_channel_data(self, args: tuple[bytes, ...]) -> None:
        """asyncssh's send_packet for a channel data packet, with one copy of the data
        instead of four (padding as it pads, sequence and rekey counts as it keeps them)."""
        size = 1 + sum(map(len, args))
        padding = -(self._send_enchdrlen + size) % self._send_blocksize
        if padding < 4:
            padding += self._send_blocksize
        packet = b"".join((bytes((padding, MSG_CHANNEL_DATA)), *args, os.urandom(padding)))
        seq = self._send_seq
        encryption = cast("Encryption", self._send_encryption)  # _sends_data_directly checked
        sealed, mac = encryption.encrypt_packet(seq, len(packet).to_bytes(4, "big"), packet)
        self._send(sealed + mac)
        self._send_seq = (seq + 1) & 0xFFFFFFFF
        self._rekey_bytes_sent += len(packet)

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
