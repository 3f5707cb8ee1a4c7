"""A terminal model for reading recordings: pyte screens plus the alternate screen.

pyte emulates one screen; full-screen programs (vim, less, top) switch to
the alternate screen and back, which restores the shell's screen. This model
keeps both, routes output to the active one and resets the alternate screen
on entry, as a real terminal does. Command extraction and replay both read
recordings through it.

Imports nothing from ``gateway`` or ``tui``.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable
from typing import Any

import pyte
from pyte import modes as mo
from wcwidth import wcwidth

from recordings.asciicast import MAX_TERMINAL_SIDE
from recordings.sanitize import TerminalSanitizer

ALT_SCREEN_SWITCH = re.compile(r"\x1b\[\?(?:1049|1047|47)([hl])")


def parse_size(text: str) -> tuple[int, int] | None:
    """(width, height) from a resize event's ``WIDTHxHEIGHT``; None if it is not one.

    A size outside 1..MAX_TERMINAL_SIDE is not one either (a hostile recording).
    """
    width, _, height = text.partition("x")
    if width.isascii() and width.isdigit() and height.isascii() and height.isdigit():
        size = int(width), int(height)
        if all(1 <= side <= MAX_TERMINAL_SIDE for side in size):
            return size
    return None


def last_alt_screen_switch(text: str) -> bool | None:
    """Whether ``text`` leaves the alternate screen on (True) or off (False).

    None if it never switches.
    """
    switches = ALT_SCREEN_SWITCH.findall(text) if "\x1b[?" in text else []
    return switches[-1] == "h" if switches else None


def _tolerant(method: Callable[..., Any]) -> Callable[..., Any]:
    def handler(self: pyte.Screen, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (TypeError, ValueError, LookupError, NameError, ArithmeticError):
            # Parameters pyte cannot take (too many, ``private``, an unknown mode
            # leaves a local unset, ...): the sequence is ignored.
            return None

    return handler


@functools.lru_cache(maxsize=4096)
def _drawn(char: str) -> bool:
    """Whether pyte can draw ``char`` without stopping (see :meth:`_Screen.draw`)."""
    width = wcwidth(char)
    return width > 0 or (width == 0 and unicodedata.combining(char) != 0)


def drawable(text: str) -> str:
    """``text`` without the characters pyte would stop drawing at.

    pyte's ``draw`` stops at the first character that is zero-width but not
    combining (the emoji variation selector U+FE0F in ``❤️``, U+3164, ...) and
    drops the rest of the chunk: a session could hide the rest of a command
    line from replay and from the command log. Such characters take no cell,
    so dropping them changes nothing else on the screen.
    """
    if text.isascii():
        return text
    return "".join(char for char in text if char.isascii() or _drawn(char))


class _Screen(pyte.Screen):
    """A pyte screen that survives every control sequence a session can print,
    and remembers which rows continue the row above (soft wraps).

    pyte's stream calls a handler with whatever parameters the sequence carried,
    plus ``private=True`` after ``?``, which most handlers do not take:
    ``ESC [ ? 1 A``, ``ESC [ ; @`` or ``ESC [ 10 J`` raised out of ``feed``, losing the
    rest of the output and the session's command log. A sequence a handler
    cannot take means nothing to a screen, so it is ignored.

    Rows are also numbered absolutely (``scrolled`` + row): a row that the
    terminal reached by wrapping at the right margin, rather than by a line
    feed, is in ``soft_wrapped``. Command extraction joins a long command
    line's rows by these marks, whatever character sits at the wrap column
    (a space there used to look like the end of a line, hiding the command's
    start).
    """

    def __init__(self, columns: int, lines: int) -> None:
        #: Lines scrolled off the top since the screen was created.
        self.scrolled = 0
        #: Absolute numbers of the rows that continue the row above.
        self.soft_wrapped: set[int] = set()
        self._wrapping = False
        super().__init__(columns, lines)

    def reset(self) -> None:
        super().reset()
        self.soft_wrapped = set()

    def draw(self, data: str) -> None:
        data = drawable(data)
        if mo.DECAWM not in self.mode:
            super().draw(data)
            return
        # Draw up to the right margin at a time, so each wrap is seen.
        while data:
            if self.cursor.x >= self.columns:
                self._wrapping = True
                try:
                    super().draw(data[:1])  # wraps, then draws one character
                finally:
                    self._wrapping = False
                self.soft_wrapped.add(self.scrolled + self.cursor.y)
                data = data[1:]
                continue
            room = self.columns - self.cursor.x
            # A wide character takes two cells: half as many non-ASCII characters always fit.
            count = room if data.isascii() else max(room // 2, 1)
            super().draw(data[:count])
            data = data[count:]

    def index(self) -> None:
        bottom = self.margins.bottom if self.margins else self.lines - 1
        if self.cursor.y == bottom:
            self.scrolled += 1
            if len(self.soft_wrapped) > 4 * self.lines:
                self.soft_wrapped = {row for row in self.soft_wrapped if row >= self.scrolled}
        super().index()

    #: A line feed also returns the carriage. For output written without a terminal
    #: (an exec session): no pty turned its ``\n`` into ``\r\n``, and the viewer's own
    #: terminal does that (``onlcr``) when the CLI replays it, so the console must too.
    newline_returns = False

    def linefeed(self) -> None:
        super().linefeed()
        if self.newline_returns and mo.LNM not in self.mode:
            self.carriage_return()
        if not self._wrapping:
            # A line feed, not a wrap: whatever was marked here before is stale.
            self.soft_wrapped.discard(self.scrolled + self.cursor.y)

    def erase_in_display(self, how: int = 0, *args: Any, **kwargs: Any) -> None:
        super().erase_in_display(how, *args, **kwargs)
        if how in (2, 3):
            self.soft_wrapped = set()

    def continues_above(self, row: int) -> bool:
        """Whether screen row ``row`` continues row ``row - 1`` (the terminal wrapped there)."""
        return row > 0 and self.scrolled + row in self.soft_wrapped


for _name in {*pyte.Stream.csi.values(), *pyte.Stream.escape.values(), *pyte.Stream.sharp.values()}:
    setattr(_Screen, _name, _tolerant(getattr(_Screen, _name)))


class TerminalModel:
    """The main and alternate screens of one terminal."""

    def __init__(self, width: int = 80, height: int = 24, *, newline_returns: bool = False) -> None:
        """``newline_returns``: the output was written without a pty (see
        :attr:`_Screen.newline_returns`)."""
        # The one sanitiser of every player: the model shows what the auditor's
        # terminal shows on live playback (APC/PM/SOS/DCS/OSC strings hidden, ...).
        self._sanitizer = TerminalSanitizer()
        self.main = _Screen(max(width, 1), max(height, 1))
        self.alt = _Screen(max(width, 1), max(height, 1))
        self.main.newline_returns = self.alt.newline_returns = newline_returns
        self._streams = {id(self.main): pyte.Stream(self.main), id(self.alt): pyte.Stream(self.alt)}
        self.in_alt = False

    @property
    def settled(self) -> bool:
        """True unless the output so far ended inside an escape sequence or string."""
        return self._sanitizer.in_ground

    @property
    def screen(self) -> pyte.Screen:
        """The screen being shown."""
        return self.alt if self.in_alt else self.main

    def feed(self, text: str) -> list[bool]:
        """Feed output; returns the alternate-screen switches it made (True = entered).

        The output goes through :class:`~recordings.sanitize.TerminalSanitizer`
        first, as it does on its way to an auditor's terminal.
        """
        text = self._sanitizer.feed(text)
        switches = []
        position = 0
        for switch in ALT_SCREEN_SWITCH.finditer(text):
            self._feed(text[position : switch.start()])
            entering = switch.group(1) == "h"
            if entering and not self.in_alt:
                self.alt.reset()
            self.in_alt = entering
            switches.append(entering)
            position = switch.end()
        self._feed(text[position:])
        return switches

    def _feed(self, text: str) -> None:
        if text:
            self._streams[id(self.screen)].feed(text)

    def resize(self, width: int, height: int) -> None:
        for screen in (self.main, self.alt):
            screen.resize(max(height, 1), max(width, 1))

    def skip(self, dropped: str) -> None:
        """Output that will not be fed: keep only its effect on which screen is shown."""
        self._sanitizer = TerminalSanitizer()
        entering = last_alt_screen_switch(dropped)
        if entering is not None:
            if entering:
                self.alt.reset()
            self.in_alt = entering
        self.screen.reset()
