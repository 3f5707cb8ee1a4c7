"""The in-terminal target menu shown when a login names no target.

The client's terminal is in raw mode, so this does its own echo and line
editing (backspace, Ctrl-U) and treats Ctrl-C / Ctrl-D as cancel. It is a
pure state machine fed with bytes; the lane writes what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import TargetSettings

MAX_INPUT = 64
CANCEL_KEYS = {0x03, 0x04}  # Ctrl-C, Ctrl-D
ERASE_KEYS = {0x08, 0x7F}
KILL_LINE = 0x15  # Ctrl-U


@dataclass(frozen=True)
class MenuChoice:
    """What the user picked: a target and optionally an account."""

    target: str
    account: str | None


class TargetMenu:
    """Numbered list of reachable targets and a one-line prompt."""

    PROMPT = "Target (number or [account@]name, Ctrl-C to quit): "

    def __init__(self, targets: list[TargetSettings]) -> None:
        self._targets = targets
        self._line = bytearray()
        self.cancelled = False

    def render(self) -> str:
        """The menu text, with CRLF line ends for a raw terminal."""
        if not self._targets:
            return "You may not reach any target. Ask an administrator for access.\r\n"
        lines = ["Targets you may reach:"]
        width = max(len(t.name) for t in self._targets)
        for number, target in enumerate(self._targets, 1):
            accounts = ", ".join(target.accounts)
            note = f"  {target.description}" if target.description else ""
            lines.append(f"  {number:>2}) {target.name:<{width}}  accounts: {accounts}{note}")
        return "\r\n".join(lines) + "\r\n" + self.PROMPT

    def feed(self, data: bytes) -> tuple[bytes, MenuChoice | None]:
        """Process typed bytes; return (bytes to echo, a choice when one is made)."""
        echo = bytearray()
        for byte in data:
            if byte in CANCEL_KEYS:
                self.cancelled = True
                return bytes(echo + b"^C\r\n"), None
            if byte in (0x0D, 0x0A):
                choice = self._choose(self._line.decode("utf-8", "replace").strip())
                self._line.clear()
                echo += b"\r\n"
                if choice is not None:
                    return bytes(echo), choice
                echo += b"No such target in the list.\r\n" + self.PROMPT.encode()
            elif byte in ERASE_KEYS:
                if self._line:
                    self._line.pop()
                    echo += b"\b \b"
            elif byte == KILL_LINE:
                echo += b"\b \b" * len(self._line)
                self._line.clear()
            elif 0x20 <= byte < 0x7F and len(self._line) < MAX_INPUT:
                self._line.append(byte)
                echo.append(byte)
        return bytes(echo), None

    def _choose(self, text: str) -> MenuChoice | None:
        if text.isdigit():
            index = int(text) - 1
            if 0 <= index < len(self._targets):
                return MenuChoice(self._targets[index].name, None)
            return None
        account, at, name = text.rpartition("@")
        if any(t.name == name for t in self._targets):
            return MenuChoice(name, account if at else None)
        return None
