"""A program the gateway runs itself, in place of a target: the console, an admin command.

``ssh -t bob:console@gw`` and ``ssh bob:admin@gw COMMAND`` reach no target:
the gateway starts a child process (the Textual console, or the ``pamgate``
command line) as the signed-in operator and relays the SSH channel to it
exactly as it relays a target's channel, through the same
:class:`~gateway.ssh.pipe.RelayPipe`: recorded, flow-controlled, with window
changes, signals and the exit status passed on.

With a pty the child gets its own pseudo-terminal (its size follows the
client's, and the kernel sends it SIGWINCH); without one, stdin, stdout and
stderr are pipes and stderr stays separate. The child runs in its own
session and process group, so a signal reaches everything it started, and
closing the session ends them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import signal
import struct
import subprocess
import termios
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from gateway.ssh.pipe import RelayPipe

#: Seconds a child gets to end after SIGHUP before it is killed.
STOP_GRACE_SECONDS = 2.0
#: Most bytes read from the child at once.
READ_SIZE = 65536


@dataclass(frozen=True)
class GatewayProgram:
    """What to run for a session that reaches the gateway itself."""

    #: ``console`` or ``admin``: the account the ledger records on target ``pamgate``.
    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    #: What allowed it (``operator:bob``), for the ledger and the trail.
    authority: str = ""


class RunningProgram:
    """The child process of one session, relayed to the pipe (the pipe's target side)."""

    def __init__(self, pipe: RelayPipe) -> None:
        self._pipe = pipe
        self._loop = asyncio.get_running_loop()
        self._process: subprocess.Popen[bytes] | None = None
        #: The pty's controlling side, or the child's stdin pipe.
        self._input_fd = -1
        #: File descriptors we read the child's output from, and whether each is stderr.
        self._outputs: dict[int, bool] = {}
        self._paused = False
        self._unwritten = bytearray()
        self._eof_pending = False
        self._waiter: asyncio.Task[None] | None = None

    async def start(self, program: GatewayProgram, terminal: tuple[str, int, int] | None) -> None:
        """Start the child (with a pty of ``(term, columns, rows)`` when given)."""
        env = {**program.env}
        if terminal is not None:
            controller, child_side = pty.openpty()
            term, columns, rows = terminal
            _set_size(child_side, columns, rows)
            env["TERM"] = term
            self._process = subprocess.Popen(
                list(program.argv), env=env, stdin=child_side, stdout=child_side,
                stderr=child_side, start_new_session=True, close_fds=True,
            )  # fmt: skip
            os.close(child_side)
            self._input_fd = controller
            self._outputs = {controller: False}
        else:
            self._process = subprocess.Popen(
                list(program.argv), env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, start_new_session=True, close_fds=True,
            )  # fmt: skip
            assert self._process.stdin and self._process.stdout and self._process.stderr
            self._input_fd = self._process.stdin.fileno()
            self._outputs = {
                self._process.stdout.fileno(): False,
                self._process.stderr.fileno(): True,
            }
        for fd in (self._input_fd, *self._outputs):
            os.set_blocking(fd, False)
        self._pipe.upstream = self
        self._watch_outputs()
        self._waiter = self._loop.create_task(self._wait())

    # -- what the pipe calls (client to child) -------------------------------

    def write(self, data: bytes) -> None:
        """Input for the child; what its pty or pipe cannot take yet waits, in order."""
        self._unwritten += data
        self._flush_input()

    def write_eof(self) -> None:
        self._eof_pending = True
        self._flush_input()

    def _flush_input(self) -> None:
        if self._input_fd < 0:  # closed: the child reads no more
            self._unwritten.clear()
            return
        while self._unwritten:
            try:
                written = os.write(self._input_fd, self._unwritten)
            except BlockingIOError:
                self._loop.add_writer(self._input_fd, self._flush_input)
                return
            except OSError:  # the child stopped reading for good
                self._unwritten.clear()
                break
            del self._unwritten[:written]
        self._loop.remove_writer(self._input_fd)
        if self._eof_pending and self._process is not None and self._process.stdin is not None:
            # EOF on a pipe is closing it; a pty has no EOF of its own to pass on.
            self._process.stdin.close()
            self._input_fd = -1

    def change_terminal_size(
        self, width: int, height: int, pixwidth: int = 0, pixheight: int = 0
    ) -> None:
        if self._process is not None and self._process.stdin is None and self._input_fd >= 0:
            _set_size(self._input_fd, width, height)

    def send_signal(self, signal_name: str) -> None:
        number = getattr(signal, f"SIG{signal_name.upper()}", None)
        if number is not None and self._process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, number)

    def send_break(self, msec: int) -> None:
        self.send_signal("INT")

    def pause_reading(self) -> None:
        self._paused = True
        for fd in self._outputs:
            self._loop.remove_reader(fd)

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            self._watch_outputs()

    def close(self) -> None:
        """End the child and everything it started: SIGHUP, then SIGKILL after a grace."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGHUP)
        self._loop.call_later(STOP_GRACE_SECONDS, self._kill)

    # -- the child's side ------------------------------------------------------

    def _watch_outputs(self) -> None:
        for fd, is_stderr in self._outputs.items():
            self._loop.add_reader(fd, self._read, fd, is_stderr)

    def _read(self, fd: int, is_stderr: bool) -> None:
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:  # EIO: the pty's last writer closed it
            data = b""
        if not data:
            self._loop.remove_reader(fd)
            self._outputs.pop(fd, None)
            if not self._outputs:
                self._pipe.target_eof()
            return
        datatype = asyncssh.EXTENDED_DATA_STDERR if is_stderr else None
        self._pipe.from_target(data, datatype)

    async def _wait(self) -> None:
        assert self._process is not None
        status = await self._exit_status(self._process)
        # Output still in the pty or pipes is read before the status is passed on
        # (bounded: a grandchild could keep them open).
        deadline = self._loop.time() + STOP_GRACE_SECONDS
        while self._outputs and self._loop.time() < deadline:
            await asyncio.sleep(0.01)
        if status < 0:
            self._pipe.exit_received(None, (signal.Signals(-status).name[3:], False, "", ""))
        else:
            self._pipe.exit_received(status, None)
        self._pipe.target_closed(None)
        self._release()

    async def _exit_status(self, process: subprocess.Popen[bytes]) -> int:
        """Wait for ``process`` to end without holding a thread for the whole session.

        A pidfd becomes readable when the process ends (Linux 5.3+); elsewhere a
        thread of its own waits, off the pools the rest of the node relies on.
        """
        try:
            pidfd = os.pidfd_open(process.pid)
        except (AttributeError, OSError):
            exited = self._loop.create_future()

            def wait_in_thread() -> None:
                status = process.wait()
                self._loop.call_soon_threadsafe(_set_result_once, exited, status)

            threading.Thread(
                target=wait_in_thread, name="pamgate-program-wait", daemon=True
            ).start()
            return int(await exited)
        ended = self._loop.create_future()
        self._loop.add_reader(pidfd, _set_result_once, ended, None)
        try:
            await ended
        finally:
            self._loop.remove_reader(pidfd)
            os.close(pidfd)
        return process.wait()

    def _release(self) -> None:
        """Stop watching the child's descriptors and close them, each exactly once.

        The pty's controlling side is ours to close; pipes belong to the Popen
        object and are closed through it, never by number, since a number
        closed twice may by then be another session's socket.
        """
        for fd in list(self._outputs):
            self._loop.remove_reader(fd)
        self._outputs.clear()
        process, fd = self._process, self._input_fd
        if fd >= 0:
            self._loop.remove_writer(fd)
        self._input_fd = -1
        if process is None:
            return
        if process.stdin is None and process.stdout is None:
            _close_quietly(fd)  # the pty's controlling side
            return
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, signal.SIGKILL)


def _set_size(fd: int, columns: int, rows: int) -> None:
    # RFC 4254: zero dimensions mean "unknown"; give the child a usable terminal.
    columns, rows = columns or 80, rows or 24
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _set_result_once(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)
