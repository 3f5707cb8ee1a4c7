"""Line input in the client's terminal: the target menu and free-text prompts.

The client's terminal is in raw mode, so this does its own echo and line
editing (backspace, Ctrl-U) and treats Ctrl-C / Ctrl-D as cancel. These are
pure state machines fed with bytes; the lane writes what they return.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import TargetSettings

MAX_INPUT = 200
CANCEL_KEYS = {0x03, 0x04}  # Ctrl-C, Ctrl-D
ERASE_KEYS = {0x08, 0x7F}
KILL_LINE = 0x15  # Ctrl-U


class LineEditor:
    """One line of typed text with echo, erase, kill-line and cancel."""

    def __init__(self, max_length: int = MAX_INPUT) -> None:
        self._line = bytearray()
        self._max = max_length
        self.cancelled = False

    def feed(self, data: bytes) -> tuple[bytes, str | None]:
        """Process typed bytes; return (bytes to echo, the line once Enter is pressed)."""
        echo = bytearray()
        for byte in data:
            if byte in CANCEL_KEYS:
                self.cancelled = True
                return bytes(echo + b"^C\r\n"), None
            if byte in (0x0D, 0x0A):
                line = self._line.decode("utf-8", "replace").strip()
                self._line.clear()
                return bytes(echo + b"\r\n"), line
            if byte in ERASE_KEYS:
                if self._line:
                    self._line.pop()
                    echo += b"\b \b"
            elif byte == KILL_LINE:
                echo += b"\b \b" * len(self._line)
                self._line.clear()
            elif 0x20 <= byte < 0x7F and len(self._line) < self._max:
                self._line.append(byte)
                echo.append(byte)
        return bytes(echo), None


@dataclass(frozen=True)
class MenuChoice:
    """What the user picked: a target and optionally an account."""

    target: str
    account: str | None


#: The menu entry (and login target) of the console served over SSH.
CONSOLE = "console"


class TargetMenu:
    """Numbered list of reachable targets (and the console, for those with a console role)
    and a one-line prompt."""

    PROMPT = "Target (number or [account@]name, Ctrl-C to quit): "

    def __init__(self, targets: list[TargetSettings], *, console: bool = False) -> None:
        self._targets = targets
        self._console = console
        self._editor = LineEditor(64)

    @property
    def cancelled(self) -> bool:
        return self._editor.cancelled

    def render(self) -> str:
        """The menu text, with CRLF line ends for a raw terminal."""
        if not self._targets and not self._console:
            return "You may not reach any target. Ask an administrator for access.\r\n"
        lines = ["Targets you may reach:" if self._targets else "You may not reach any target."]
        width = max((len(t.name) for t in self._targets), default=0)
        for number, target in enumerate(self._targets, 1):
            accounts = ", ".join(target.accounts)
            note = f"  {target.description}" if target.description else ""
            lines.append(f"  {number:>2}) {target.name:<{width}}  accounts: {accounts}{note}")
        if self._console:
            lines.append(f"   c) {CONSOLE}  requests, sessions, recordings, audit (your roles)")
        return "\r\n".join(lines) + "\r\n" + self.PROMPT

    def feed(self, data: bytes) -> tuple[bytes, MenuChoice | None]:
        """Process typed bytes; return (bytes to echo, a choice when one is made)."""
        echo, line = self._editor.feed(data)
        if line is None:
            return echo, None
        choice = self._choose(line)
        if choice is None:
            return echo + b"No such target in the list.\r\n" + self.PROMPT.encode(), None
        return echo, choice

    def _choose(self, text: str) -> MenuChoice | None:
        if self._console and text in ("c", CONSOLE):
            return MenuChoice(CONSOLE, None)
        if text.isdigit():
            index = int(text) - 1
            if 0 <= index < len(self._targets):
                return MenuChoice(self._targets[index].name, None)
            return None
        account, at, name = text.rpartition("@")
        if any(t.name == name for t in self._targets):
            return MenuChoice(name, account if at else None)
        return None
