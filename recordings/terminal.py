"""A terminal model for reading recordings: pyte screens plus the alternate screen.

pyte emulates one screen; full-screen programs (vim, less, top) switch to
the alternate screen and back, which restores the shell's screen. This model
keeps both, routes output to the active one and resets the alternate screen
on entry, as a real terminal does. Command extraction and replay both read
recordings through it.

Imports nothing from ``gateway`` or ``tui``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pyte

from recordings.asciicast import MAX_TERMINAL_SIDE

ALT_SCREEN_SWITCH = re.compile(r"\x1b\[\?(?:1049|1047|47)([hl])")
#: Unicode format characters (category Cf: bidi overrides, zero-width spaces and
#: joiners, ...). pyte stops drawing a chunk at the first of them, so a session
#: could hide the rest of its output from replay and command extraction; they
#: have no width, so dropping them changes nothing else on screen.
FORMAT_CHARACTERS = re.compile(
    "[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
    "\U000e0020-\U000e007f]"
)


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


class _Screen(pyte.Screen):
    """A pyte screen that survives every control sequence a session can print.

    pyte's stream calls a handler with whatever parameters the sequence carried,
    plus ``private=True`` after ``?``, which most handlers do not take:
    ``ESC [ ? 1 A``, ``ESC [ ; @`` or ``ESC [ 10 J`` raised out of ``feed``, losing the
    rest of the output and the session's command log. A sequence a handler
    cannot take means nothing to a screen, so it is ignored.
    """

    #: A line feed also returns the carriage. For output written without a terminal
    #: (an exec session): no pty turned its ``\n`` into ``\r\n``, and the viewer's own
    #: terminal does that (``onlcr``) when the CLI replays it, so the console must too.
    newline_returns = False

    def linefeed(self) -> None:
        self.index()
        if self.newline_returns or pyte.modes.LNM in self.mode:
            self.carriage_return()


for _name in {*pyte.Stream.csi.values(), *pyte.Stream.escape.values(), *pyte.Stream.sharp.values()}:
    setattr(_Screen, _name, _tolerant(getattr(_Screen, _name)))


class TerminalModel:
    """The main and alternate screens of one terminal."""

    def __init__(self, width: int = 80, height: int = 24, *, newline_returns: bool = False) -> None:
        """``newline_returns``: the output was written without a pty (see
        :attr:`_Screen.newline_returns`)."""
        self.main = _Screen(max(width, 1), max(height, 1))
        self.alt = _Screen(max(width, 1), max(height, 1))
        self.main.newline_returns = self.alt.newline_returns = newline_returns
        self._streams = {id(self.main): pyte.Stream(self.main), id(self.alt): pyte.Stream(self.alt)}
        self.in_alt = False

    @property
    def screen(self) -> pyte.Screen:
        """The screen being shown."""
        return self.alt if self.in_alt else self.main

    def feed(self, text: str) -> list[bool]:
        """Feed output; returns the alternate-screen switches it made (True = entered)."""
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
            self._streams[id(self.screen)].feed(FORMAT_CHARACTERS.sub("", text))

    def resize(self, width: int, height: int) -> None:
        for screen in (self.main, self.alt):
            screen.resize(max(height, 1), max(width, 1))

    def skip(self, dropped: str) -> None:
        """Output that will not be fed: keep only its effect on which screen is shown."""
        entering = last_alt_screen_switch(dropped)
        if entering is not None:
            if entering:
                self.alt.reset()
            self.in_alt = entering
        self.screen.reset()
