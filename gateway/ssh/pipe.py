"""The bytes of one relayed session: client channel to target channel and back, with flow control.

:class:`RelayPipe` moves pty, exec and subsystem traffic: stdout and stderr
separately, EOF both ways, window changes, signals and break. Every byte goes
through the session's recording tap and, for file transfers, its payload
filter. When one side's window fills, the other side stops reading; when the
recording falls behind the disk, the target waits too: recording bytes are
never dropped.

:class:`UpstreamSession` is asyncssh's callback object for the target's
channel; it only forwards to the pipe. The pipe knows nothing of sessions,
policies or the ledger: when the target's channel closes it reports the exit
status (or signal) to whoever made it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import asyncssh

from gateway.domain.recordings.tap import SessionTap
from gateway.ssh.channel import SessionChannel


class PayloadFilter(Protocol):
    """A hook between the two channels of a session (file-transfer audit and policy).

    It sees every payload chunk and returns what to pass on; it may hold
    bytes back (a partial packet) and answer the client itself.
    """

    def to_target(self, data: bytes) -> bytes: ...

    def to_client(self, data: bytes) -> bytes: ...

    async def finished(self, exit_status: int | None) -> None:
        """The session ended (``exit_status`` if the command exited): write what is left."""


@dataclass(frozen=True)
class TargetExit:
    """How the target's channel ended."""

    exit_status: int | None
    #: ``(signal, core_dumped, message, lang)`` when the command died of a signal.
    exit_signal: tuple[str, bool, str, str] | None
    #: The connection error, when the channel was lost rather than closed.
    error: Exception | None


class RelayPipe:
    """Moves one session's bytes between the client's channel and the target's."""

    def __init__(
        self,
        client: SessionChannel,
        tap: SessionTap,
        payload_filter: PayloadFilter | None,
        on_target_closed: Callable[[TargetExit], None],
    ) -> None:
        self._client = client
        self._tap = tap
        self._filter = payload_filter
        self._on_target_closed = on_target_closed
        self.upstream: asyncssh.SSHClientChannel[bytes] | None = None
        self.bytes_to_target = 0
        self.bytes_from_target = 0
        #: Why target reading is paused: the client's window, the recording's backlog.
        self._client_full = False
        self._recording_full = False
        #: Target stdout not yet sent to the client (see from_target).
        self._target_output: list[bytes] = []

    # -- client to target ---------------------------------------------------

    def from_client(self, data: bytes) -> None:
        self.bytes_to_target += len(data)
        self._tap.from_client(data)
        if self._filter is not None:
            data = self._filter.to_target(data)
        if data and self.upstream is not None:
            self.upstream.write(data)

    def client_eof(self) -> None:
        if self.upstream is not None:
            self.upstream.write_eof()

    def resize(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        if self.upstream is not None:
            self._tap.resize(width, height)
            self.upstream.change_terminal_size(width, height, pixwidth, pixheight)

    def signal(self, signal: str) -> None:
        if self.upstream is not None:
            self.upstream.send_signal(signal)

    def send_break(self, msec: int) -> bool:
        if self.upstream is None:
            return False
        self.upstream.send_break(msec)
        return True

    def client_window_full(self, full: bool) -> None:
        """The client's window filled (or has room again): stop (or resume) reading the target."""
        self._client_full = full
        self._update_upstream_reading()

    # -- target to client -----------------------------------------------------

    def from_target(self, data: bytes, datatype: asyncssh.DataType) -> None:
        """Forward target output to the client, keeping stderr separate.

        Stdout is gathered for the rest of this event-loop turn and sent as
        one write (:meth:`flush`): the target's packets are small (a pty
        gives sshd ~4 KiB per read), and each packet the gateway sends costs
        a cipher set-up, a recording event and a socket write. Waiting one
        turn adds microseconds, not a round trip.
        """
        self.bytes_from_target += len(data)
        if not self._client.is_open:
            return
        if datatype == asyncssh.EXTENDED_DATA_STDERR:
            self.flush()  # keeps stdout written before this stderr ahead of it
            self._tap_output(data, stderr=True)
            self._client.write_stderr(data)
            return
        if not self._target_output:
            asyncio.get_running_loop().call_soon(self.flush)
        self._target_output.append(data)

    def flush(self) -> None:
        """Record and send the stdout gathered since the last send."""
        if not self._target_output:
            return
        gathered = self._target_output
        data = gathered[0] if len(gathered) == 1 else b"".join(gathered)
        self._target_output = []
        if not self._client.is_open:
            return
        self._tap_output(data, stderr=False)
        if self._filter is not None:
            data = self._filter.to_client(data)
        if data:
            self._client.write(data)

    def target_eof(self) -> None:
        """The target will send no more output."""
        self.flush()
        if self._client.is_open:
            self._client.write_eof()

    def target_window_full(self, full: bool) -> None:
        """The target's window filled (or has room): stop (or resume) reading the client."""
        if full:
            self._client.pause_reading()
        else:
            self._client.resume_reading()

    def target_closed(self, exc: Exception | None) -> None:
        """The target's channel closed: report how it ended."""
        self.flush()
        upstream = self.upstream
        status = upstream.get_exit_status() if upstream is not None else None
        signal = upstream.get_exit_signal() if upstream is not None else None
        self._on_target_closed(TargetExit(status, signal, exc))

    # -- the recording ------------------------------------------------------------

    def recording_drained(self) -> None:
        """The recording caught up with the disk: the target may send again."""
        self._recording_full = False
        self._update_upstream_reading()

    def _tap_output(self, data: bytes, *, stderr: bool) -> None:
        self._tap.from_target(data, stderr=stderr)
        if self._tap.writer.backlogged and not self._recording_full:
            self._recording_full = True
            self._update_upstream_reading()

    def _update_upstream_reading(self) -> None:
        if self.upstream is None:
            return
        if self._client_full or self._recording_full:
            self.upstream.pause_reading()
        else:
            self.upstream.resume_reading()


class UpstreamSession(asyncssh.SSHClientSession[bytes]):
    """The target side of a relayed session: forwards everything to the pipe."""

    def __init__(self, pipe: RelayPipe) -> None:
        self._pipe = pipe

    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        self._pipe.upstream = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self._pipe.from_target(data, datatype)

    def eof_received(self) -> bool:
        self._pipe.target_eof()
        # Stay half-open: the exit status usually follows the EOF.
        return True

    def pause_writing(self) -> None:
        self._pipe.target_window_full(True)

    def resume_writing(self) -> None:
        self._pipe.target_window_full(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self._pipe.target_closed(exc)
