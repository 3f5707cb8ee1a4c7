"""Command extraction: the command lines a user submitted, from two witnesses.

**The screen.** The output stream is fed to a terminal emulator (pyte, through
:class:`~recordings.terminal.TerminalModel`). The cursor position at a line's
first keystroke says where the prompt ends; when the shell echoes the newline
after Enter, the submitted line is read off the screen: the logical line at
the cursor, followed upwards through the rows the terminal reached by
wrapping (whatever character sits at the wrap column), minus the prompt.
What the shell showed is what is logged, so backspace edits, cursor-left
inserts, history recall, Ctrl-R and tab completion come out as the user saw
them.

**The keystrokes.** The input stream is replayed through a small line editor
(:class:`KeyLine`: printable keys, backspace, Ctrl-U/K/W, cursor keys,
bracketed paste). It knows every line submitted, including several lines
in one input event (fast typing, pastes) and lines typed ahead of the first
prompt, but not what the shell made of keys it cannot follow (Tab, history,
Ctrl-R): those lines are *uncertain* from the keystrokes.

Each submitted line is logged from the witnesses that saw it, and says so
(:attr:`Command.source`): ``screen+keys`` when both agree, ``screen`` when
only the screen can tell (history, completion), ``keys`` when the line never
appeared on the screen (typed ahead, sent with others before the shell
echoed them, typed after ``stty -echo``). When both saw the line and
disagree, the screen's text is logged and :attr:`Command.note` carries what
the keystrokes say. Lines that were not echoed at a prompt that asks for a
password, passphrase or code are not logged (the keystrokes are in the
recording; the command log goes to the audit trail).

Lines bash joins into one history entry are joined here too
(:class:`HistoryJoiner`): backslash continuations, open quotes, heredoc
bodies and multi-line compound commands.

Not logged: anything typed while a full-screen program holds the alternate
screen (vim, less, top), lines abandoned with Ctrl-C, empty lines.

Cost is bounded: output between keystrokes is kept only as its last
:data:`OUTPUT_TAIL` characters (enough to rebuild a screen), so a session
that prints gigabytes costs the extractor about what its keystrokes cost.

This is an audit aid, not a security boundary: a determined user can hide a
command from any stream-derived log (aliases, scripts, programs that read
their own input). The recording itself is the evidence.

Imports nothing from ``gateway`` or ``tui``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from recordings.asciicast import Event
from recordings.terminal import TerminalModel, drawable, parse_size

#: Output kept between keystrokes; older output is dropped unseen.
OUTPUT_TAIL = 64 * 1024
#: A submitted line is read once the echo has this much output without a newline.
SUBMIT_WITHOUT_NEWLINE = 4096
#: Rows followed upwards when joining a soft-wrapped command.
MAX_WRAPPED_ROWS = 50
#: Output lines waited for a line typed ahead to appear on the screen.
MAX_UNSEEN_NEWLINES = 400
#: Longest line the keystroke witness keeps (a paste of a whole file is cut here).
MAX_KEY_LINE = 64 * 1024
#: Parts, and characters, a multi-line command may have before it is logged as it stands.
MAX_JOINED_PARTS = 200
MAX_JOINED_CHARS = 256 * 1024

BOTH = "screen+keys"
SCREEN = "screen"
KEYS = "keys"
#: A shell without a terminal: its input lines are its commands.
INPUT = "input"
#: An exec request: the command is what the client asked to run.
REQUEST = "request"
NOT_ON_SCREEN = "never appeared on the screen"
UNFOLLOWED_KEYS = "never appeared on the screen; edited with keys the log cannot follow"

#: A prompt whose unechoed input is a secret, not a command.
_SECRET_PROMPT = re.compile(
    r"pass(word|phrase)|\bpin\b|verification code|one-time|\botp\b|token", re.I
)


@dataclass(frozen=True)
class Command:
    """A submitted command line and when Enter was pressed (seconds into the recording)."""

    time: float
    text: str
    #: Which witness saw it: ``screen+keys``, ``screen`` or ``keys``.
    source: str = BOTH
    #: Disagreement between the witnesses, or why only one saw it ("" if none).
    note: str = ""
    #: The prompt the screen showed before the line ("" if unknown); not part of the log.
    prompt: str = field(default="", compare=False, repr=False)


# -- the keystroke witness -----------------------------------------------------------

PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"
_LEFT = {"\x02", "\x1b[D", "\x1bOD"}
_RIGHT = {"\x06", "\x1b[C", "\x1bOC"}
_HOME = {"\x01", "\x1b[H", "\x1bOH", "\x1b[1~", "\x1b[7~"}
_END = {"\x05", "\x1b[F", "\x1bOF", "\x1b[4~", "\x1b[8~"}
_DELETE = {"\x1b[3~"}
#: Keys that change nothing in the line (redraws, flow control).
_NEUTRAL = {"\x0c", "\x11", "\x13", "\x1b[I", "\x1b[O"}
_CSI_TOKEN = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1bO.|\x1b[^\[O]|\x1b")


def key_tokens(text: str) -> Iterator[str]:
    """The keys in ``text``: single characters and whole escape sequences."""
    position = 0
    while position < len(text):
        if text[position] == "\x1b":
            match = _CSI_TOKEN.match(text, position)
            assert match is not None  # the last alternative matches a lone ESC
            token = match.group()
        else:
            token = text[position]
        position += len(token)
        yield token


@dataclass
class KeyLine:
    """The line being typed, rebuilt from the keystrokes alone."""

    chars: list[str] = field(default_factory=list)
    cursor: int = 0
    #: False once a key the shell interprets in ways keystrokes cannot show was used.
    certain: bool = True
    pasting: bool = False

    @property
    def text(self) -> str:
        return "".join(self.chars)

    def reset(self) -> None:
        self.chars, self.cursor, self.certain = [], 0, True

    def insert(self, text: str) -> None:
        if len(self.chars) + len(text) > MAX_KEY_LINE:
            self.certain = False
            text = text[: max(MAX_KEY_LINE - len(self.chars), 0)]
        self.chars[self.cursor : self.cursor] = text
        self.cursor += len(text)

    def edit(self, key: str) -> None:
        """Apply one key that is neither Enter nor an abandon."""
        if len(key) == 1 and (key >= " " and key != "\x7f"):
            self.insert(key)
        elif key in ("\x7f", "\x08"):
            if self.cursor:
                del self.chars[self.cursor - 1]
                self.cursor -= 1
        elif key == "\x15":  # Ctrl-U: kill to the start
            del self.chars[: self.cursor]
            self.cursor = 0
        elif key == "\x0b":  # Ctrl-K: kill to the end
            del self.chars[self.cursor :]
        elif key == "\x17":  # Ctrl-W: kill the whitespace-delimited word before the cursor
            start = self.cursor
            while start and self.chars[start - 1].isspace():
                start -= 1
            while start and not self.chars[start - 1].isspace():
                start -= 1
            del self.chars[start : self.cursor]
            self.cursor = start
        elif key in _LEFT:
            self.cursor = max(self.cursor - 1, 0)
        elif key in _RIGHT:
            self.cursor = min(self.cursor + 1, len(self.chars))
        elif key in _HOME:
            self.cursor = 0
        elif key in _END:
            self.cursor = len(self.chars)
        elif key in _DELETE or key == "\x04":
            if self.cursor < len(self.chars):
                del self.chars[self.cursor]
        elif key not in _NEUTRAL:
            self.certain = False  # Tab, history, Ctrl-R, yank, transpose, meta keys, ...


@dataclass
class _Prompt:
    """Where the user's input began on the screen."""

    text: str
    rprompt: str


@dataclass
class _Submit:
    """A line submitted with Enter, waiting for its echo."""

    time: float
    keys: str
    keys_certain: bool
    prompt: _Prompt | None
    #: The screen cannot show this line faithfully (resized while it was edited).
    spoiled: bool = False
    #: Output lines it has waited for its echo; what the screen showed at the first.
    waited: int = 0
    first_seen: str | None = None


class CommandExtractor:
    """Turns a recording's event stream into the command lines submitted at prompts."""

    def __init__(self, width: int = 80, height: int = 24) -> None:
        self._terminal = TerminalModel(width, height)
        self._output: list[str] = []
        self._output_size = 0
        self._seen_output = False
        self._prompt: _Prompt | None = None
        self._last_prompt: _Prompt | None = None
        self._prompt_tried = False
        self._line_spoiled = False
        self._submits: list[_Submit] = []
        self._keys = KeyLine()
        self._key_carry = ""
        self._joiner = HistoryJoiner()

    def feed(self, event: Event) -> list[Command]:
        """Process one event; return the commands it completed."""
        if event.code == "o":
            return self._joiner.feed_all(self._on_output(event.data))
        if event.code == "i":
            return self._joiner.feed_all(self._on_input(event.time, event.data))
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
        """End of stream: resolve submitted lines whose echo never came."""
        found = []
        self._apply_output()
        while self._submits:
            command = self._resolve(self._submits.pop(0), final=True)
            if isinstance(command, Command):
                found.append(command)
        return self._joiner.feed_all(found) + self._joiner.finish()

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
            command = self._resolve(self._submits[0], final=False)
            if command is not False:
                self._submits.pop(0)
                if isinstance(command, Command):
                    found.append(command)
            text = text[cut:]
            if text.startswith("\n"):
                self._buffer("\n")
                text = text[1:]
        self._buffer(text)
        return found

    def _on_input(self, time: float, keys: str) -> list[Command]:
        self._apply_output()
        found = []
        while self._submits and self._submits[0].waited and self._submits[0].first_seen:
            # The user typed on after the screen showed something else: it will not come.
            submit = self._submits.pop(0)
            found.append(self._with_prompt(submit, self._give_up(submit)))
        keys, self._key_carry = self._key_carry + keys, ""
        if keys.endswith("\x1b") or re.search(r"\x1b\[[0-?]*$", keys[-16:]):
            # An escape sequence cut between two events: keep its start for the next one.
            cut = keys.rfind("\x1b")
            keys, self._key_carry = keys[:cut], keys[cut:]
        for key in key_tokens(keys):
            if self._terminal.in_alt:
                self._keys.reset()  # keys for vim, less, top: not a command line
                self._keys.pasting = False
                self._prompt, self._line_spoiled, self._prompt_tried = None, False, False
                continue
            if key == PASTE_START:
                self._keys.pasting = True
                continue
            if key == PASTE_END:
                self._keys.pasting = False
                continue
            if key in ("\r", "\n"):
                self._submit(time)
            elif not self._keys.pasting and (
                key == "\x03" or (key == "\x04" and not self._keys.chars)
            ):
                # Ctrl-C, or Ctrl-D at an empty line: nothing is run.
                self._keys.reset()
                self._prompt, self._line_spoiled, self._prompt_tried = None, False, False
            else:
                if not self._prompt_tried and not self._submits and self._seen_output:
                    self._prompt, self._prompt_tried = self._capture_prompt(), True
                if self._keys.pasting and key == "\t":
                    self._keys.insert(key)  # pasted text is inserted literally
                else:
                    self._keys.edit(key)
        return found

    def _submit(self, time: float) -> None:
        self._submits.append(
            _Submit(
                time,
                self._keys.text.strip(),
                self._keys.certain,
                self._prompt,
                spoiled=self._line_spoiled,
            )
        )
        self._keys.reset()
        self._prompt, self._line_spoiled, self._prompt_tried = None, False, False

    def _on_resize(self, size: str) -> None:
        parsed = parse_size(size)
        if parsed is None:
            return
        self._apply_output()
        self._terminal.resize(*parsed)
        if self._prompt is not None:
            # The shell redraws the line for the new width; what is on the
            # screen now is not a faithful copy of it: the keystrokes decide.
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
        for submit in self._submits:
            submit.prompt = None

    def _apply_output(self) -> None:
        if not self._output:
            return
        text = "".join(self._output)
        self._output, self._output_size = [], 0
        if True in self._terminal.feed(text):
            self._prompt = None

    # -- reading the screen -------------------------------------------------------

    def _capture_prompt(self) -> _Prompt | None:
        """The prompt before the cursor; None if there is none (a command is still running)."""
        screen = self._terminal.main
        row = screen.display[screen.cursor.y]
        left, right = row[: screen.cursor.x], row[screen.cursor.x :]
        if not left.strip():
            return None
        self._last_prompt = _Prompt(text=left, rprompt=right.strip())
        return self._last_prompt

    def _logical_line(self) -> tuple[str, str]:
        """The line the cursor is on, joined with the rows it wrapped from: (first row, whole)."""
        screen = self._terminal.main
        rows = screen.display
        bottom = min(screen.cursor.y, len(rows) - 1)
        top = bottom
        while bottom - top < MAX_WRAPPED_ROWS and screen.continues_above(top):
            top -= 1
        return rows[top], "".join(rows[top : bottom + 1]).rstrip()

    def _read_screen(self, prompt: _Prompt, *, required: bool = False) -> str | None:
        """The submitted line as the screen shows it, without the prompt.

        None if ``required`` and the line does not start with the prompt.
        """
        first, line = self._logical_line()
        if prompt.rprompt and first.rstrip().endswith(prompt.rprompt) and line == first.rstrip():
            line = line[: -len(prompt.rprompt)]
        prompt_stem = prompt.text.rstrip()
        if prompt.text and line.startswith(prompt.text):
            line = line[len(prompt.text) :]
        elif prompt_stem and line.startswith(prompt_stem):
            line = line[len(prompt_stem) :]
        elif required:
            return None
        return line.strip()

    def _resolve(self, submit: _Submit, *, final: bool) -> Command | None | Literal[False]:
        """The command for ``submit`` with the prompt it was typed at (see :meth:`_decide`)."""
        command = self._decide(submit, final=final)
        return self._with_prompt(submit, command) if isinstance(command, Command) else command

    @staticmethod
    def _with_prompt(submit: _Submit, command: Command) -> Command:
        if submit.prompt is None:
            return command
        return dataclasses.replace(command, prompt=submit.prompt.text.rstrip())

    def _decide(self, submit: _Submit, *, final: bool) -> Command | None | Literal[False]:
        """The command for ``submit``, read at a newline in the output (None: nothing to log).

        False: not decided yet. A line whose keystrokes are known waits (up to
        :data:`MAX_UNSEEN_NEWLINES` output lines, or the next keystroke) for a
        screen line that shows it: a line typed ahead is echoed later, after
        the output of the command before it.
        """
        if self._terminal.in_alt:
            return None
        keys = drawable(submit.keys) if submit.keys_certain else ""
        prompt = None if submit.spoiled else submit.prompt
        seen = self._read_screen(prompt) if prompt is not None else None
        if keys and (seen == keys or self._logical_line()[1].endswith(keys)):
            # Both saw it; the keystrokes keep what takes no cell on screen (U+FE0F).
            return Command(submit.time, submit.keys, BOTH)
        if seen is None and not keys and self._last_prompt is not None:
            # Typed ahead, with keys the keystrokes cannot follow: read it after the last prompt.
            seen = self._read_screen(self._last_prompt, required=True)
        if seen and not keys:
            return Command(submit.time, seen, SCREEN)
        if not keys:
            if prompt is None and submit.keys and not submit.keys_certain:
                # Typed ahead with Tab or history keys, and never shown: the typed part.
                return Command(submit.time, submit.keys, KEYS, UNFOLLOWED_KEYS)
            return None
        if seen == "" and submit.waited == 0 and prompt is not None:
            if _SECRET_PROMPT.search(prompt.text.rstrip()):
                return None  # a secret typed at a prompt that hides it
            return Command(submit.time, submit.keys, KEYS, NOT_ON_SCREEN)
        if seen and submit.first_seen is None:
            submit.first_seen = seen
        submit.waited += 1
        if not final and submit.waited < MAX_UNSEEN_NEWLINES:
            return False
        return self._give_up(submit)

    def _give_up(self, submit: _Submit) -> Command:
        """The command for a line the screen never confirmed."""
        if submit.first_seen:
            note = f"the keystrokes say: {submit.keys}"
            return Command(submit.time, submit.first_seen, SCREEN, note)
        return Command(submit.time, submit.keys, KEYS, NOT_ON_SCREEN)


def input_line_commands(events: Iterable[Event], *, complete: bool = True) -> list[Command]:
    """The command log of a shell without a terminal (``ssh -T``, ``bash -s < script``).

    There is no screen and no line editing: every line of the input is a line
    the shell reads, so each one is logged (source ``input``), joined as bash's
    history joins them. ``complete``: the stream has ended (a last line without
    a newline counts); otherwise only finished lines are returned.
    """
    joiner = HistoryJoiner()
    found: list[Command] = []
    pending, last_time = "", 0.0
    for event in events:
        if event.code != "i":
            continue
        pending += event.data
        last_time = event.time
        *lines, pending = re.split(r"\r\n|\n|\r", pending)
        for line in lines:
            if line.strip():
                found += joiner.feed(Command(event.time, line.strip(), INPUT))
        if len(pending) > MAX_KEY_LINE:
            found += joiner.feed(Command(event.time, pending.strip(), INPUT, "line cut"))
            pending = ""
    if not complete:
        return found
    if pending.strip():
        found += joiner.feed(Command(last_time, pending.strip(), INPUT))
    return found + joiner.finish()


# -- joining lines as bash history does ------------------------------------------------

_HEREDOC = re.compile(r"<<(-?)\s*(['\"]?)([A-Za-z0-9_.\-]+)\2")
_OPENERS = {"for", "while", "until", "if", "case", "select", "{", "function"}
_CLOSERS = {"done", "fi", "esac", "}"}
#: After these, bash's history joins the next line with a space, not "; ".
_NO_SEMICOLON_AFTER = ("do", "then", "else", "elif", "in", "{", "|", "&&", "||", "(", ";", "&")


@dataclass
class _Shape:
    """What a command line leaves open at its end."""

    continued: bool = False  # ends with an unescaped backslash
    quote: str = ""  # an open ' or "
    heredocs: list[tuple[str, bool]] = field(default_factory=list)  # (delimiter, strip tabs)
    depth: int = 0  # open compound commands


def _scan(text: str, quote: str = "") -> _Shape:
    """Scan one line: open quote, trailing backslash, heredocs and compound depth."""
    shape = _Shape()
    word: list[str] = []
    words: list[str] = []
    position = 0
    while position < len(text):
        char = text[position]
        if quote == "'":
            if char == "'":
                quote = ""
        elif quote == '"':
            if char == "\\":
                position += 1
            elif char == '"':
                quote = ""
        elif char == "\\":
            if position == len(text) - 1:
                shape.continued = True
            position += 1
            word.append("x")
        elif char in "'\"":
            quote = char
            word.append("x")
        elif char == "#" and not word:
            break  # a comment
        elif char.isspace() or char in ";&|()":
            if word:
                words.append("".join(word))
                word = []
            if char in ";&|()":
                words.append(char)
        else:
            if (
                char == "<"
                and text.startswith("<<", position)
                and not text.startswith("<<<", position)
            ):
                match = _HEREDOC.match(text, position)
                if match:
                    shape.heredocs.append((match.group(3), match.group(1) == "-"))
                    position = match.end()
                    continue
            word.append(char)
        position += 1
    if word:
        words.append("".join(word))
    shape.quote = quote
    command_position = True
    for token in words:
        if command_position and token in _OPENERS:
            shape.depth += 1
        elif command_position and token in _CLOSERS:
            shape.depth -= 1
        command_position = token in (";", "&", "|", "(", ")", "&&", "||", "do", "then", "else",
                                     "elif", "{", "}", "!", "done", "fi")  # fmt: skip
    return shape


class HistoryJoiner:
    """Joins the lines of one multi-line command into one entry, as bash's history does.

    Rules (bash 5, ``cmdhist`` on, checked against bash's own history in the tests):
    a trailing backslash joins the next line directly; an open quote or a
    heredoc joins with a newline (the heredoc body and its delimiter line are
    part of the command); a compound command (``for``/``while``/``if``/``case``/``{``)
    joins its lines with ``"; "`` (a space after ``do``, ``then``, ``{``, ``|``...).
    This is a small scanner, not a shell parser: odd constructs may come out
    as separate entries, never as lost ones.
    """

    def __init__(self) -> None:
        self._parts: list[Command] = []
        self._text = ""
        self._quote = ""
        self._heredocs: list[tuple[str, bool]] = []
        self._depth = 0
        self._continued = False

    def feed_all(self, commands: Iterable[Command]) -> list[Command]:
        found: list[Command] = []
        for command in commands:
            found.extend(self.feed(command))
        return found

    def feed(self, command: Command) -> list[Command]:
        if self._parts and command.prompt and command.prompt == self._parts[0].prompt:
            # The shell showed its primary prompt again, not PS2: whatever this scanner
            # thinks is open (``$'it\\'s'``), the shell took the last line as complete.
            return self.finish() + self.feed(command)
        line = command.text
        if not self._parts:
            self._text = line
        elif self._heredocs:
            delimiter, strip_tabs = self._heredocs[0]
            self._text += "\n" + line
            if (line.lstrip("\t") if strip_tabs else line) == delimiter:
                self._heredocs.pop(0)
            self._parts.append(command)
            return self._maybe_done()
        elif self._continued:
            self._text = self._text[:-1] + line
        elif self._quote:
            self._text += "\n" + line
        else:
            previous = self._text.rstrip()
            joiner = " " if previous.endswith(_NO_SEMICOLON_AFTER) else "; "
            self._text = previous + joiner + line
        self._parts.append(command)
        shape = _scan(line, self._quote)
        self._continued, self._quote = shape.continued, shape.quote
        self._heredocs += shape.heredocs
        self._depth = max(self._depth + shape.depth, 0)
        return self._maybe_done()

    def _maybe_done(self) -> list[Command]:
        incomplete = self._continued or self._quote or self._heredocs or self._depth > 0
        small = len(self._parts) < MAX_JOINED_PARTS and len(self._text) < MAX_JOINED_CHARS
        if incomplete and small:
            return []
        return self.finish()

    def finish(self) -> list[Command]:
        """Log what is pending, complete or not."""
        if not self._parts:
            return []
        parts, self._parts = self._parts, []
        self._quote, self._heredocs, self._depth, self._continued = "", [], 0, False
        if len(parts) == 1:
            return parts
        sources = {part.source for part in parts}
        source = sources.pop() if len(sources) == 1 else KEYS if KEYS in sources else SCREEN
        notes = "; ".join(dict.fromkeys(part.note for part in parts if part.note))
        return [Command(parts[0].time, self._text, source, notes)]
