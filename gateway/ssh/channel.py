"""The client's session channel: asyncssh's callbacks, and who gets the input when.

:class:`SessionChannel` is what asyncssh calls for one ``session`` channel
from a client's ``ssh``. It records what the client asked for (pty, exec,
subsystem) and hands the channel to a :class:`ChannelHandler` that the lane
chose: a relayed session's admission (:mod:`gateway.ssh.human.session`,
:mod:`gateway.ssh.machine.session`) or a credential exchange
(:mod:`gateway.ssh.machine.exchanges`). It makes no decision of its own.

The client's input goes, in this order of precedence, to the relay once it is
attached (:class:`~gateway.ssh.pipe.RelayPipe`), to a prompt or wait of the
:class:`~gateway.ssh.dialog.TerminalDialog`, to a gateway command reading its
stdin (:meth:`SessionChannel.read_input`), or is kept until one of them takes
it, with reading paused so the client's window, not memory, bounds it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import asyncssh

from gateway.ssh.data_packets import write_channel_data
from gateway.ssh.dialog import TerminalDialog

if TYPE_CHECKING:
    from gateway.ssh.pipe import RelayPipe

#: Exit status reported to the client when the gateway itself ends or refuses the session.
GATEWAY_EXIT_STATUS = 255


#: The size used for a dimension a client sends as zero (RFC 4254 6.2: zero means "ignore").
DEFAULT_TERMINAL_SIZE = (80, 24)


def usable_terminal_size(
    width: int, height: int, pixwidth: int = 0, pixheight: int = 0
) -> tuple[int, int, int, int]:
    """A pty size with zero character dimensions replaced by 80x24.

    ``ssh -tt`` with stdin not a terminal (scripts, expect, CI) asks for 0x0.
    Passed on, the target's shell and the recording's screen model both get
    a one-column terminal: every command would be logged as its last character.
    """
    return (
        width or DEFAULT_TERMINAL_SIZE[0],
        height or DEFAULT_TERMINAL_SIZE[1],
        pixwidth,
        pixheight,
    )


@dataclass
class SessionRequest:
    """What the client asked of the channel."""

    term_type: str | None = None
    #: Columns, rows, pixel width, pixel height.
    term_size: tuple[int, int, int, int] = (80, 24, 0, 0)
    term_modes: Mapping[int, int] = field(default_factory=dict)
    command: str | None = None
    subsystem: str | None = None

    @property
    def pty(self) -> bool:
        return self.term_type is not None

    @property
    def kind(self) -> str:
        """``subsystem``, ``exec`` or ``shell``, as the ledger records it."""
        if self.subsystem is not None:
            return "subsystem"
        return "exec" if self.command is not None else "shell"


class ChannelHost(Protocol):
    """What a channel needs from its lane."""

    def track_task(self, task: asyncio.Task[Any]) -> None: ...


class ChannelHandler(Protocol):
    """What runs on a session channel once the client has made its request."""

    def subsystem_requested(self, subsystem: str) -> bool:
        """Accept (True) or refuse (False, audited by the handler) a subsystem."""

    async def run(self, channel: SessionChannel) -> None:
        """Decide and carry out the session; end by exiting the channel one way or another."""

    def channel_closed(self) -> None:
        """The client closed the channel or went away (at any point)."""


class SessionChannel(asyncssh.SSHServerSession[bytes]):
    """The server side of one session channel (see the module docstring)."""

    def __init__(self, host: ChannelHost, handler: ChannelHandler) -> None:
        self._host = host
        self._handler = handler
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.request = SessionRequest()
        self.dialog: TerminalDialog | None = None
        self._pipe: RelayPipe | None = None
        self._pending = bytearray()
        #: Set while a gateway command reads all of the client's input (see read_input).
        self._input_complete: asyncio.Event | None = None
        self._input_limit = 0
        #: The client sent EOF.
        self.client_eof = False
        #: The client's channel is gone.
        self.gone = False

    # -- the client's requests (asyncssh callbacks) --------------------------

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Mapping[int, int]
    ) -> bool:
        self.request.term_type = term_type
        self.request.term_size = usable_terminal_size(*term_size)
        self.request.term_modes = term_modes
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self.request.command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        if not self._handler.subsystem_requested(subsystem):
            return False
        self.request.subsystem = subsystem
        return True

    def session_started(self) -> None:
        assert self._chan is not None
        self._chan.pause_reading()
        self.dialog = TerminalDialog(self._chan, pty=self.request.pty)
        task = asyncio.get_running_loop().create_task(self._handler.run(self))
        self._host.track_task(task)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self._pipe is not None:
            self._pipe.from_client(data)
        elif self.dialog is not None and self.dialog.active:
            self.dialog.feed(data)
        elif self._input_complete is not None:
            self._pending += data
            if len(self._pending) > self._input_limit:
                self._input_complete.set()
        else:
            self._pending += data
            if self._chan is not None:
                self._chan.pause_reading()

    def eof_received(self) -> bool:
        self.client_eof = True
        if self._pipe is not None:
            self._pipe.client_eof()
        elif self._input_complete is not None:
            self._input_complete.set()
        elif self.dialog is not None:
            self.dialog.input_ended()
        return True

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self.request.term_size = usable_terminal_size(width, height, pixwidth, pixheight)
        width, height = self.request.term_size[:2]
        if self._pipe is not None:
            self._pipe.resize(width, height, pixwidth, pixheight)

    def signal_received(self, signal: str) -> None:
        if self._pipe is not None:
            self._pipe.signal(signal)

    def break_received(self, msec: int) -> bool:
        return self._pipe is not None and self._pipe.send_break(msec)

    def pause_writing(self) -> None:
        if self._pipe is not None:
            self._pipe.client_window_full(True)

    def resume_writing(self) -> None:
        if self._pipe is not None:
            self._pipe.client_window_full(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        if self.dialog is not None:
            self.dialog.close()
        if self._input_complete is not None:
            self._input_complete.set()
        self._handler.channel_closed()

    # -- what handlers use ------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """True while the client's channel can still take output."""
        return self._chan is not None and not self.gone and not self._chan.is_closing()

    def environment(self) -> Mapping[str, str]:
        """The environment variables the client sent."""
        return self._chan.get_environment() if self._chan is not None else {}

    def attach(self, pipe: RelayPipe) -> None:
        """From now on the client's input goes to ``pipe``, starting with what was kept."""
        self._pipe = pipe
        if self._pending:
            pending = bytes(self._pending)
            self._pending.clear()
            pipe.from_client(pending)
        if self.client_eof:
            pipe.client_eof()
        if self._chan is not None:
            self._chan.resume_reading()

    async def read_input(self, limit: int, timeout: float) -> bytes | None:
        """All of the client's stdin up to EOF, for a gateway command; None if too big or slow."""
        assert self._chan is not None
        self._input_complete, self._input_limit = asyncio.Event(), limit
        if self.client_eof or len(self._pending) > limit:
            self._input_complete.set()
        self._chan.resume_reading()
        try:
            await asyncio.wait_for(self._input_complete.wait(), timeout)
        except TimeoutError:
            return None
        finally:
            self._chan.pause_reading()
        data = bytes(self._pending)
        self._pending.clear()
        return None if len(data) > limit else data

    def write(self, data: bytes) -> None:
        """Bytes on the client's stdout (relayed output, or the gateway's own protocol reply)."""
        if self.is_open and self._chan is not None:
            write_channel_data(self._chan, data)

    def write_eof(self) -> None:
        """No more output for the client (the exit status may still follow)."""
        if self.is_open:
            self._chan.write_eof()  # type: ignore[union-attr]

    def write_stderr(self, data: bytes) -> None:
        """Bytes on the client's stderr."""
        if self.is_open:
            self._chan.write_stderr(data)  # type: ignore[union-attr]

    def pause_reading(self) -> None:
        if self._chan is not None:
            self._chan.pause_reading()

    def resume_reading(self) -> None:
        if self._chan is not None:
            self._chan.resume_reading()

    def tell_user(self, message: str) -> None:
        """A ``pamgate: ...`` line on the client's stderr, clear of what a shell drew."""
        if self.dialog is not None:
            self.dialog.say(message, fresh_line=self._pipe is not None)

    def answer(self, status: int, output: str = "", *, note: str = "") -> None:
        """Answer from the gateway itself, with no target: ``output`` on stdout, ``note`` on
        stderr (``pamgate: ...``), then exit with ``status``. Self-service and exchanges."""
        if output:
            self.write(output.encode())
        if note:
            self.tell_user(note)
        self.exit(status)

    # exit() is valid after our EOF (is_closing() is already True then), so
    # these check only whether the client's channel is gone.
    def exit(self, status: int) -> None:
        if self._chan is not None and not self.gone:
            self._chan.exit(status)

    def exit_with_signal(self, signal: str, core_dumped: bool, message: str, lang: str) -> None:
        if self._chan is not None and not self.gone:
            self._chan.exit_with_signal(signal, core_dumped, message, lang)
