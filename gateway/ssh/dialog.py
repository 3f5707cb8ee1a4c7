"""Talking with the user in their terminal before the session starts.

Between authentication and the relay, the gateway may need to ask something
(which target, why access is needed) or make the user wait (for approval).
:class:`TerminalDialog` owns the client channel's input during that time:
it reads lines with echo and editing, notices Ctrl-C, and ends every wait
with None when the user cancels or goes away. It knows nothing of policy.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import asyncssh

from gateway.ssh.menu import CANCEL_KEYS, LineEditor, MenuChoice, TargetMenu

T = TypeVar("T")


class TerminalDialog:
    """Prompts, menus and waits on one session channel."""

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], *, pty: bool) -> None:
        self._chan = chan
        self._pty = pty
        self._handler: Callable[[bytes], None] | None = None
        self._handler_reads = False
        self._cancelled = asyncio.Event()
        self._input_ended = False
        self._gone = False

    @property
    def active(self) -> bool:
        """True while a prompt or wait owns the input."""
        return self._handler is not None

    def feed(self, data: bytes) -> None:
        """Input from the client while the dialog owns it."""
        if self._handler is not None:
            self._handler(data)

    def input_ended(self) -> None:
        """The client sent EOF: prompts end with None; a wait goes on, output still works."""
        self._input_ended = True
        if self._handler is not None and self._handler_reads:
            self._cancelled.set()

    def close(self) -> None:
        """The client left: every prompt or wait ends with None."""
        self._gone = True
        self._cancelled.set()

    def say(self, message: str, *, fresh_line: bool = False) -> None:
        """One line of information for the user (on stderr).

        ``fresh_line`` starts it on a new line, clear of whatever a shell drew.
        """
        if self._gone or self._chan.is_closing():
            return
        text = ("\n" if fresh_line else "") + f"pamgate: {message}\n"
        if self._pty:
            text = text.replace("\n", "\r\n")
        self._chan.write_stderr(text.encode())

    async def choose_target(self, menu: TargetMenu, text: str) -> MenuChoice | None:
        """Show the menu (or a message plus the prompt) and wait for a choice."""
        result: asyncio.Future[MenuChoice | None] = asyncio.get_running_loop().create_future()

        def handle(data: bytes) -> None:
            echo, choice = menu.feed(data)
            self._echo(echo)
            if choice is not None or menu.cancelled:
                _settle(result, choice)

        self._chan.write(text.encode())
        if not text.endswith(TargetMenu.PROMPT):
            return None
        return await self._own_input(handle, result, reads=True)

    async def read_line(self, prompt: str) -> str | None:
        """Ask for one line of text; None if the user cancels."""
        editor = LineEditor()
        result: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

        def handle(data: bytes) -> None:
            echo, line = editor.feed(data)
            self._echo(echo)
            if line is not None or editor.cancelled:
                _settle(result, line)

        self._chan.write(prompt.encode())
        return await self._own_input(handle, result, reads=True)

    async def wait_for(
        self,
        check: Callable[[], Awaitable[T | None]],
        *,
        interval: float = 0.5,
        wake: asyncio.Event | None = None,
        hotkeys: Mapping[int, str] | None = None,
    ) -> T | str | None:
        """Call ``check`` until it returns something: again each time ``wake`` is set,
        and at the latest every ``interval`` seconds.

        Returns None if the user presses Ctrl-C or leaves first, or the value
        of a key in ``hotkeys`` if they press it.
        """
        result: asyncio.Future[T | str | None] = asyncio.get_running_loop().create_future()
        keys = hotkeys or {}

        def handle(data: bytes) -> None:
            for byte in data:
                if byte in CANCEL_KEYS:
                    _settle(result, None)
                elif byte in keys:
                    _settle(result, keys[byte])

        woken = wake or asyncio.Event()

        async def poll() -> None:
            while not result.done():
                woken.clear()  # before the check: a wake during it means check again
                found = await check()
                if found is not None:
                    _settle(result, found)
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), interval)

        poller = asyncio.get_running_loop().create_task(poll())
        try:
            return await self._own_input(handle, result, reads=False)
        finally:
            poller.cancel()

    async def _own_input(
        self, handle: Callable[[bytes], None], result: asyncio.Future[T], *, reads: bool
    ) -> T | None:
        if self._gone or (reads and self._input_ended):
            return None
        self._cancelled.clear()
        self._handler, self._handler_reads = handle, reads
        self._chan.resume_reading()
        cancelled = asyncio.get_running_loop().create_task(self._cancelled.wait())
        try:
            waiting: set[asyncio.Future[Any]] = {result, cancelled}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            return result.result() if result.done() else None
        finally:
            cancelled.cancel()
            self._handler = None
            self._chan.pause_reading()

    def _echo(self, data: bytes) -> None:
        if data and not self._gone:
            self._chan.write(data)


def _settle(future: asyncio.Future[T], value: T) -> None:
    if not future.done():
        future.set_result(value)
