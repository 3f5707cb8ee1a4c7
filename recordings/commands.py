"""Command extraction: the command lines a user submitted, read off a terminal emulator.

The output stream is fed to a terminal emulator (pyte); the input stream
says where the prompt ends (the cursor position at the first keystroke) and
when a line is submitted (Enter) or abandoned (Ctrl-C). When the shell echoes
the newline after Enter, the submitted line is read from the screen, from
the prompt to the end of the (possibly soft-wrapped) logical line. What the
shell showed is what is logged, so backspace edits, cursor-left inserts,
history recall and tab completion come out as the user saw them.

Not logged: keystrokes at prompts that do not echo (a ``sudo`` password
leaves nothing on the screen), anything typed while a full-screen program
holds the alternate screen (vim, less, top), lines abandoned with Ctrl-C,
empty lines, a line being edited when the window is resized, and typeahead
before the first output.

Cost is bounded: output between keystrokes is kept only as its last
:data:`OUTPUT_TAIL` characters (enough to rebuild a screen), so a session
that prints gigabytes costs the extractor about what its keystrokes cost.

This is an audit aid, not a security boundary: a determined user can hide a
command from any stream-derived log (aliases, scripts, terminal tricks). The
recording itself is the evidence.

Imports nothing from ``gateway`` or ``tui``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from recordings.asciicast import Event
from recordings.terminal import TerminalModel, parse_size

#: Output kept between keystrokes; older output is dropped unseen.
OUTPUT_TAIL = 64 * 1024
#: A submitted line is read once the echo has this much output without a newline.
SUBMIT_WITHOUT_NEWLINE = 4096
#: Rows followed upwards when joining a soft-wrapped command.
MAX_WRAPPED_ROWS = 50

_SUBMIT = {"\r", "\n"}
_ABANDON = {"\x03", "\x04"}  # Ctrl-C, Ctrl-D at an empty line


@dataclass(frozen=True)
class Command:
    """A submitted command line and when Enter was pressed (seconds into the recording)."""

    time: float
    text: str


@dataclass
class _Prompt:
    """Where the user's input began on the screen."""

    text: str
    rprompt: str


class CommandExtractor:
    """Turns a recording's event stream into the command lines submitted at prompts."""

    def __init__(self, width: int = 80, height: int = 24) -> None:
        self._terminal = TerminalModel(width, height)
        self._output: list[str] = []
        self._output_size = 0
        self._seen_output = False
        self._prompt: _Prompt | None = None
        self._line_spoiled = False
        self._submits: list[float] = []

    def feed(self, event: Event) -> list[Command]:
        """Process one event; return the commands it completed."""
        if event.code == "o":
            return self._on_output(event.data)
        if event.code == "i":
            return self._on_input(event.time, event.data)
        if event.code == "r":
            self._on_resize(event.data)
        return []

    def feed_all(self, events: Iterable[Event]) -> list[Command]:
        """Process a whole stream; return every command, in order."""
        found: list[Command] = []
        for event in events:
            found.extend(self.feed(event))
        found.extend(self.finish())
        return found

    def finish(self) -> list[Command]:
        """End of stream: resolve a submitted line whose echo never ended."""
        found = []
        self._apply_output()
        while self._submits:
            command = self._read_submitted(self._submits.pop(0))
            if command:
                found.append(command)
        return found

    # -- events ------------------------------------------------------------------

    def _on_output(self, text: str) -> list[Command]:
        self._seen_output = True
        found = []
        while self._submits:
            newline = text.find("\n")
            if newline == -1 and len(text) < SUBMIT_WITHOUT_NEWLINE:
                break
            cut = newline if newline != -1 else SUBMIT_WITHOUT_NEWLINE
            self._buffer(text[:cut])
            self._apply_output()
            command = self._read_submitted(self._submits.pop(0))
            if command:
                found.append(command)
            text = text[cut:]
        self._buffer(text)
        return found

    def _on_input(self, time: float, keys: str) -> list[Command]:
        if not self._seen_output:
            return []  # typeahead before the first prompt
        self._apply_output()
        for key in keys:
            if self._terminal.in_alt:
                continue
            if key in _SUBMIT:
                if self._prompt is not None and not self._line_spoiled:
                    self._submits.append(time)
                else:
                    self._prompt, self._line_spoiled = None, False
            elif key in _ABANDON:
                self._prompt, self._line_spoiled = None, False
            elif self._prompt is None and not self._submits:
                self._prompt = self._capture_prompt()
        return []

    def _on_resize(self, size: str) -> None:
        parsed = parse_size(size)
        if parsed is None:
            return
        self._apply_output()
        self._terminal.resize(*parsed)
        if self._prompt is not None:
            # The shell redraws the line for the new width; what is on the
            # screen now is not a faithful copy of it, so drop the line.
            self._line_spoiled = True

    # -- the emulator ----------------------------------------------------------------

    def _buffer(self, text: str) -> None:
        if not text:
            return
        self._output.append(text)
        self._output_size += len(text)
        if self._output_size > 2 * OUTPUT_TAIL:
            self._trim()

    def _trim(self) -> None:
        joined = "".join(self._output)
        self._terminal.skip(joined[:-OUTPUT_TAIL])
        kept = joined[-OUTPUT_TAIL:]
        self._output, self._output_size = [kept], len(kept)
        # The screen is rebuilt from the tail: any remembered prompt is stale.
        self._prompt = None

    def _apply_output(self) -> None:
        if not self._output:
            return
        text = "".join(self._output)
        self._output, self._output_size = [], 0
        if True in self._terminal.feed(text):
            self._prompt = None

    # -- reading the screen -------------------------------------------------------

    def _capture_prompt(self) -> _Prompt:
        screen = self._terminal.main
        row = screen.display[screen.cursor.y]
        left, right = row[: screen.cursor.x], row[screen.cursor.x :]
        return _Prompt(text=left, rprompt=right.strip())

    def _read_submitted(self, time: float) -> Command | None:
        prompt, self._prompt, self._line_spoiled = self._prompt, None, False
        if prompt is None or self._terminal.in_alt:
            return None
        screen = self._terminal.main
        rows = screen.display
        bottom = screen.cursor.y
        top = bottom
        prompt_stem = prompt.text.rstrip()
        while (
            top > 0
            and bottom - top < MAX_WRAPPED_ROWS
            and not (prompt_stem and rows[top].startswith(prompt_stem))
            and rows[top - 1][-1:] not in ("", " ")
        ):
            top -= 1
        first = rows[top]
        if prompt.rprompt and first.rstrip().endswith(prompt.rprompt):
            first = first.rstrip()[: -len(prompt.rprompt)]
        line = first + "".join(rows[top + 1 : bottom + 1])
        if prompt.text and line.startswith(prompt.text):
            line = line[len(prompt.text) :]
        elif prompt_stem and line.startswith(prompt_stem):
            line = line[len(prompt_stem) :]
        text = line.strip()
        return Command(time, text) if text else None
