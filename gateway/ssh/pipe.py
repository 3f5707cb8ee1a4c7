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
from gateway.ssh.data_packets import write_channel_data

#: How long the target's EOF waits for the exit status that usually follows it at once.
EOF_GRACE_SECONDS = 1.0
#: Output pieces at least this big are sent as they came (see RelayPipe.flush).
WHOLE_PACKET = 16 * 1024


class PayloadFilter(Protocol):
    """A hook between the two channels of a session (file-transfer audit and policy).

    It sees every payload chunk and returns what to pass on; it may hold
    bytes back (a partial packet) and answer the client itself.
    """

    def to_target(self, data: bytes) -> bytes: ...

    def to_client(self, data: bytes) -> bytes: ...

    async def finished(self, exit_status: int | None) -> None:
        """The session ended (``exit_status`` if the command exited): write what is left."""


class TargetChannel(Protocol):
    """The target side of a relayed session: a target's SSH channel, or a program the
    gateway runs itself (:mod:`gateway.ssh.gateway_program`)."""

    def write(self, data: bytes) -> None: ...

    def write_eof(self) -> None: ...

    def change_terminal_size(
        self, width: int, height: int, pixwidth: int = 0, pixheight: int = 0
    ) -> None: ...

    def send_signal(self, signal: str) -> None: ...

    def send_break(self, msec: int) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


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
        self.upstream: TargetChannel | None = None
        self.bytes_to_target = 0
        self.bytes_from_target = 0
        #: Why target reading is paused: the client's window, the recording's backlog.
        self._client_full = False
        self._recording_full = False
        #: Target stdout not yet sent to the client (see from_target).
        self._target_output: list[bytes] = []
        #: The target's exit status or signal, once it sent one.
        self.exit: TargetExit | None = None
        self._target_eof = False
        self._eof_timer: asyncio.TimerHandle | None = None
        self._reported = False

    # -- client to target ---------------------------------------------------

    def from_client(self, data: bytes) -> None:
        self.bytes_to_target += len(data)
        self._tap.from_client(data)
        if self._filter is not None:
            data = self._filter.to_target(data)
        if not data or self.upstream is None:
            return
        if isinstance(self.upstream, asyncssh.SSHClientChannel):
            write_channel_data(self.upstream, data)  # the target's SSH channel: the fast path
        else:
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
        """Record and send the stdout gathered since the last send.

        Small pieces (a pty's) are joined into one send. Pieces of at least
        WHOLE_PACKET bytes (bulk exec output: the target's packets are 32 KiB,
        the client's largest) already make full packets: joining them would
        only copy every byte once more.
        """
        if not self._target_output:
            return
        gathered = self._target_output
        self._target_output = []
        if not self._client.is_open:
            return
        if len(gathered) > 1 and (
            self._filter is not None or min(map(len, gathered)) < WHOLE_PACKET
        ):
            gathered = [b"".join(gathered)]
        for data in gathered:
            self._tap_output(data, stderr=False)
            if self._filter is not None:
                data = self._filter.to_client(data)
            if data:
                self._client.write(data)

    def exit_received(self, status: int | None, signal: tuple[str, bool, str, str] | None) -> None:
        """The target sent the command's exit status (or signal)."""
        self.exit = TargetExit(status, signal, None)
        if self._target_eof:
            self._report(self.exit)

    def target_eof(self) -> None:
        """The target will send no more output.

        The client must get the exit status before our EOF: an OpenSSH client
        whose input is done closes its channel on EOF, and once it has closed
        nothing more can be sent (sshd, unlike asyncssh, still sends the
        status after a client's close). sshd itself often sends its EOF a
        moment *before* the exit status (the pipe closes before the child is
        reaped), so the EOF waits up to EOF_GRACE_SECONDS for the status; a
        command that closes its output and runs on gets the EOF after that.
        """
        self.flush()
        self._target_eof = True
        if self.exit is not None:
            self._report(self.exit)
        elif self._eof_timer is None:
            self._eof_timer = asyncio.get_running_loop().call_later(
                EOF_GRACE_SECONDS, self._forward_eof
            )

    def _forward_eof(self) -> None:
        if self.exit is None and not self._reported:
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
        self._report(self.exit or TargetExit(None, None, exc))

    def _report(self, ended: TargetExit) -> None:
        if self._eof_timer is not None:
            self._eof_timer.cancel()
        if not self._reported:
            self._reported = True
            self._on_target_closed(ended)

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

    def exit_status_received(self, status: int) -> None:
        self._pipe.exit_received(status, None)

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self._pipe.exit_received(None, (signal, core_dumped, msg, lang))

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
