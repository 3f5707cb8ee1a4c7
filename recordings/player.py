"""Replaying recordings in a terminal: timing, pause, seek, jump to commands.

Seeking must be fast on large recordings, and re-playing a gigabyte of
output to reach minute 50 is not. A :class:`RecordingIndex` samples the
recording about once a second and every :data:`INDEX_EVERY_CHARS` characters
of output (so it follows dense output too: ``seq 1 10000000`` prints 100 MB
in a few seconds): time, byte offset, output so far and which screen was
shown. To show the screen at time T, the player feeds a fresh
:class:`~recordings.terminal.TerminalModel` only the last
:data:`SEEK_TAIL` characters of output before T (a screen's worth, many
times over), found through the index, and draws that screen. Cost is
independent of the recording's size.

Everything written to the terminal goes through
:class:`~recordings.sanitize.TerminalSanitizer`.

Keys: space pauses, left/right seek 5 s, ``n``/``p`` jump to the next or
previous command, ``q`` quits.

Imports nothing from ``gateway`` or ``tui``.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import json
import os
import re
import select
import shutil
import signal
import sys
import tempfile
import termios
import time
import tty
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

import pyte

from recordings.asciicast import TornLine, decode_event, open_text, read_header
from recordings.sanitize import TerminalSanitizer
from recordings.terminal import TerminalModel, last_alt_screen_switch, parse_size

#: Output characters replayed into a fresh screen to show the screen at a time.
SEEK_TAIL = 32 * 1024
#: The index samples the recording at least this often (seconds of recording)...
INDEX_EVERY = 1.0
#: ... and at least every this many output characters, so dense output (``seq``,
#: ``cat`` of a big file) does not leave megabytes between two samples to replay.
INDEX_EVERY_CHARS = SEEK_TAIL // 2
SEEK_STEP = 5.0
JUMP_LEAD = 0.05
INDEX_VERSION = 2

#: Restores the auditor's terminal when replay ends, whatever the recording set (the
#: sanitiser lets these modes through, so each is undone): leave the alternate screen,
#: plain colours, replace (not insert) mode, no automatic newline, normal cursor and
#: keypad keys, auto-wrap on, no blinking cursor, cursor shown, bracketed paste off,
#: ASCII character set, origin mode off, no scroll region; then the cursor goes to
#: the bottom row (resetting origin mode and the scroll region moved it home).
TERMINAL_RESTORE = (
    "\x1b[?1049l\x1b[0m\x1b[4l\x1b[20l\x1b[?1l\x1b>\x1b[?7h\x1b[?12l\x1b[?25h"
    "\x1b[?2004l\x1b(B\x1b[?6l\x1b[r\x1b[999;1H"
)


@dataclass(frozen=True)
class IndexPoint:
    """The state of a recording at the start of one of its event lines."""

    time: float
    offset: int
    output_chars: int
    in_alt: bool
    width: int
    height: int


@dataclass
class RecordingIndex:
    """Sampled positions in a plain (uncompressed) recording, for seeking."""

    points: list[IndexPoint]
    duration: float
    header_end: int

    @classmethod
    def build(cls, path: Path, progress: Callable[[float], None] | None = None) -> RecordingIndex:
        """Scan a plain recording once."""
        header = read_header(path)
        width, height = header["width"], header["height"]
        points: list[IndexPoint] = []
        size = path.stat().st_size
        output_chars, in_alt, last_sample, duration = 0, False, -INDEX_EVERY, 0.0
        sampled_chars = -INDEX_EVERY_CHARS
        with open(path, "rb") as handle:
            header_end = len(handle.readline())
            offset = header_end
            for line in handle:
                try:
                    event = decode_event(line)
                except TornLine:
                    break  # a torn last line after a crash
                if event is None:
                    offset += len(line)
                    continue
                moment, code, data = event.time, event.code, event.data
                if (
                    moment - last_sample >= INDEX_EVERY
                    or output_chars - sampled_chars >= INDEX_EVERY_CHARS
                ):
                    points.append(IndexPoint(moment, offset, output_chars, in_alt, width, height))
                    last_sample, sampled_chars = moment, output_chars
                    if progress is not None:
                        progress(offset / max(size, 1))
                if code == "o":
                    output_chars += len(data)
                    switched = last_alt_screen_switch(data)
                    if switched is not None:
                        in_alt = switched
                elif code == "r":
                    width, height = parse_size(data) or (width, height)
                duration = moment
                offset += len(line)
        return cls(points, duration, header_end)

    def save(self, path: Path) -> None:
        data = {
            "version": INDEX_VERSION,
            "duration": self.duration,
            "header_end": self.header_end,
            "points": [list(asdict(p).values()) for p in self.points],
        }
        path.write_text(json.dumps(data, separators=(",", ":")))

    @classmethod
    def load(cls, path: Path) -> RecordingIndex | None:
        try:
            data = json.loads(path.read_text())
            if data.get("version") != INDEX_VERSION:
                return None
            points = [IndexPoint(*p) for p in data["points"]]
            return cls(points, float(data["duration"]), int(data["header_end"]))
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def at_or_before(self, moment: float) -> IndexPoint | None:
        """The last sample at or before ``moment``."""
        position = bisect.bisect_right(self._times, moment) - 1
        return self.points[position] if position >= 0 else None

    def tail_start(self, point: IndexPoint) -> IndexPoint:
        """The latest sample at least SEEK_TAIL output characters before ``point``."""
        position = bisect.bisect_right(self._chars, point.output_chars - SEEK_TAIL) - 1
        return self.points[max(position, 0)]

    @functools.cached_property
    def _times(self) -> list[float]:
        # Built once: a long recording has tens of thousands of samples per seek.
        return [p.time for p in self.points]

    @functools.cached_property
    def _chars(self) -> list[int]:
        return [p.output_chars for p in self.points]


class PlainRecording:
    """A recording as a plain file (compressed ones are unpacked to a temporary file)."""

    def __init__(self, path: Path) -> None:
        self.source = path
        self._temporary: Path | None = None
        if path.name.endswith(".cast"):
            self.path = path
            return
        handle, name = tempfile.mkstemp(suffix=".cast", prefix="pamgate-replay-")
        os.close(handle)
        self._temporary = self.path = Path(name)
        with open_text(path) as source, open(self.path, "w", encoding="utf-8") as plain:
            shutil.copyfileobj(source, plain)

    def index(self) -> RecordingIndex:
        """The index, from its cache file next to the recording when possible."""
        cache = self.source.with_name(self.source.name + ".idx")
        if (
            self._temporary is None
            and cache.exists()
            and cache.stat().st_mtime >= self.path.stat().st_mtime
        ):
            loaded = RecordingIndex.load(cache)
            if loaded is not None:
                return loaded
        built = RecordingIndex.build(self.path)
        # In a read-only recordings folder the index is simply rebuilt next time.
        with contextlib.suppress(OSError):
            built.save(cache)
        return built

    def close(self) -> None:
        if self._temporary is not None:
            self._temporary.unlink(missing_ok=True)


def events_from(path: Path, offset: int) -> Generator[tuple[float, str, str, int], None, None]:
    """Events from a byte offset: (time, code, data, offset of the next line)."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        for line in handle:
            offset += len(line)
            try:
                event = decode_event(line)
            except TornLine:
                return
            if event is not None:
                yield event.time, event.code, event.data, offset


def screen_at(
    path: Path, index: RecordingIndex, moment: float, *, newline_returns: bool = False
) -> tuple[TerminalModel, int]:
    """The terminal as it was at ``moment``, and the offset to continue playing from.

    Only the last :data:`SEEK_TAIL` characters of output before ``moment`` are
    emulated, however large the events around it: what comes before only
    decides which screen (main or alternate) is shown. ``newline_returns``: the
    output was written without a pty (an exec session), so a line feed also
    returns the carriage (see :class:`TerminalModel`).
    """
    point = index.at_or_before(moment)
    if point is None:
        header = read_header(path)
        terminal = TerminalModel(header["width"], header["height"], newline_returns=newline_returns)
        return terminal, index.header_end
    start = index.tail_start(point)
    resume = start.offset
    # (code, data) up to the moment; output beyond the last SEEK_TAIL characters is cut.
    events: list[tuple[str, str]] = []
    output_chars = 0
    for event_time, code, data, next_offset in events_from(path, start.offset):
        if event_time > moment:
            break
        if code == "o":
            output_chars += len(data)
        if code in ("o", "r"):
            events.append((code, data))
        resume = next_offset
    terminal = TerminalModel(start.width, start.height, newline_returns=newline_returns)
    terminal.in_alt = start.in_alt
    to_skip = max(output_chars - SEEK_TAIL, 0)
    tail: list[str] = []  # output since the last resize, fed at once
    for code, data in events:
        if code == "r":
            _feed_tail(terminal, "".join(tail))
            tail = []
            if size := parse_size(data):
                terminal.resize(*size)
            continue
        if to_skip >= len(data):
            terminal.skip(data)
            to_skip -= len(data)
            continue
        if to_skip:
            # Start the tail at a line boundary, not inside an escape sequence.
            cut = data.find("\n", to_skip)
            cut = to_skip if cut == -1 else cut + 1
            terminal.skip(data[:cut])
            data, to_skip = data[cut:], 0
        tail.append(data)
    _feed_tail(terminal, "".join(tail))
    return terminal, resume


#: Anything but printable text, CR, LF and colours (SGR).
_NOT_PLAIN = re.compile("\x1b(?!\\[[0-9;:]{0,40}m)|[\x00-\x09\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f-\x9f]")
_SGR = re.compile("\x1b\\[[0-9;:]{0,40}m")


def _feed_tail(terminal: TerminalModel, text: str) -> None:
    """Feed ``text``, skipping plain lines that scroll off the screen before its end.

    Dense output (``seq``, ``cat`` of a log, coloured or not) is thousands of
    plain lines, and only the last screenful of them shows. After the last
    control or escape sequence other than a colour, a run of text, colours and
    CR LF line ends with more than twice the screen's height of lines scrolls
    everything above its last ``2 * height`` lines off the screen: those lines
    are all that is drawn (from column 0, as the CR LF before them left the
    cursor), after the colours of the skipped lines (which only set the pen).
    The screen comes out the same, at a fraction of the emulation.
    """
    if not text:
        return
    plain_from = 0
    for plain_from_match in _NOT_PLAIN.finditer(text):
        plain_from = plain_from_match.end()
    keep = 2 * terminal.screen.lines + 1
    position = len(text)
    for _ in range(keep):
        position = text.rfind("\r\n", plain_from, position)
        if position == -1:
            terminal.feed(text)
            return
    terminal.feed(text[:plain_from])
    if not terminal.settled:
        # Inside a string or sequence (a hostile, unterminated one): no shortcut.
        terminal.feed(text[plain_from:])
        return
    pen = _SGR.findall(text, plain_from, position)
    resets = [i for i, sgr in enumerate(pen) if sgr in ("\x1b[m", "\x1b[0m")]
    terminal.feed("".join(pen[resets[-1] if resets else 0 :]) + "\r" + text[position + 2 :])


_SGR_COLOURS = {
    "black": 0, "red": 1, "green": 2, "brown": 3, "yellow": 3, "blue": 4,
    "magenta": 5, "cyan": 6, "white": 7,
}  # fmt: skip


def _colour(value: str, base: int) -> str:
    if value == "default":
        return ""
    if value in _SGR_COLOURS:
        return str(base + _SGR_COLOURS[value])
    if value.startswith("bright") and value[6:] in _SGR_COLOURS:
        return str(base + 60 + _SGR_COLOURS[value[6:]])
    if len(value) == 6:
        try:
            r, g, b = (int(value[i : i + 2], 16) for i in (0, 2, 4))
        except ValueError:
            return ""
        return f"{base + 8};2;{r};{g};{b}"
    return ""


def render_screen(screen: pyte.Screen) -> str:
    """Draw a screen from scratch: clear, every row with its colours, then the cursor."""
    parts = ["\x1b[0m\x1b[H\x1b[2J"]
    for y in range(screen.lines):
        row = screen.buffer[y]
        parts.append(f"\x1b[{y + 1};1H")
        current = ""
        for x in range(screen.columns):
            char = row[x]
            if char.data == "":
                continue  # the second half of a wide character
            codes = [
                code
                for code, on in (("1", char.bold), ("3", char.italics), ("4", char.underscore),
                                 ("7", char.reverse))
                if on
            ]  # fmt: skip
            codes += [c for c in (_colour(char.fg, 30), _colour(char.bg, 40)) if c]
            style = "\x1b[0;" + ";".join(codes) + "m" if codes else "\x1b[0m"
            if style != current:
                parts.append(style)
                current = style
            parts.append(char.data)
    parts.append(f"\x1b[0m\x1b[{screen.cursor.y + 1};{screen.cursor.x + 1}H")
    return "".join(parts)


class Player:
    """Plays a recording to a terminal, reading keys from ``keys_fd``."""

    def __init__(
        self,
        recording: PlainRecording,
        *,
        out: TextIO,
        keys_fd: int | None,
        speed: float = 1.0,
        idle_limit: float | None = None,
        command_times: list[float] | None = None,
    ) -> None:
        self._recording = recording
        self._index = recording.index()
        self._out = out
        self._keys_fd = keys_fd
        self._speed = max(speed, 0.01)
        self._idle_limit = idle_limit
        self._commands = sorted(command_times or [])
        self._sanitizer = TerminalSanitizer()
        self._pending_keys: list[str] = []

    @property
    def duration(self) -> float:
        return self._index.duration

    def render_at(self, moment: float) -> int:
        """Draw the screen at ``moment``; return the offset to go on from."""
        terminal, resume = screen_at(self._recording.path, self._index, moment)
        self._sanitizer = TerminalSanitizer()
        self._out.write(("\x1b[?1049h" if terminal.in_alt else "") + render_screen(terminal.screen))
        self._out.flush()
        return resume

    def play(self, start: float = 0.0) -> None:
        """Play from ``start`` until the end or ``q``."""
        position = start
        offset = self.render_at(start) if start > 0 else self._index.header_end
        paused = False
        while True:
            seek_to = None
            for event_time, code, data, next_offset in events_from(self._recording.path, offset):
                if event_time < position:
                    continue
                delay = (event_time - position) / self._speed
                if self._idle_limit is not None:
                    delay = min(delay, self._idle_limit)
                action = self._wait(delay, paused)
                while action == "pause":
                    paused = not paused
                    action = self._wait(None if paused else 0, paused)
                if action == "quit":
                    return
                if action is not None:
                    seek_to = self._target(action, position)
                    break
                position = event_time
                if code == "o":
                    self._out.write(self._sanitizer.feed(data))
                    self._out.flush()
                offset = next_offset
            if seek_to is None:
                return
            paused = False
            position = max(0.0, min(seek_to, self._index.duration))
            offset = self.render_at(position)

    def _target(self, action: str, position: float) -> float:
        if action == "forward":
            return position + SEEK_STEP
        if action == "back":
            return position - SEEK_STEP
        # A jump lands just before the command's Enter, so the typed line shows.
        if action == "next":
            later = [t for t in self._commands if t > position + JUMP_LEAD + 0.01]
            return later[0] - JUMP_LEAD if later else position
        earlier = [t for t in self._commands if t < position - 0.5]
        return earlier[-1] - JUMP_LEAD if earlier else 0.0

    def _wait(self, delay: float | None, paused: bool) -> str | None:
        """Sleep ``delay`` seconds (None: until a key); return the key's action if one came."""
        if self._pending_keys:
            return self._pending_keys.pop(0)
        if self._keys_fd is None:
            if delay:
                time.sleep(delay)
            return None
        deadline = None if delay is None else time.monotonic() + delay
        while True:
            timeout = None if deadline is None else max(deadline - time.monotonic(), 0)
            ready, _, _ = select.select([self._keys_fd], [], [], timeout)
            if not ready:
                return None
            self._pending_keys += split_keys(os.read(self._keys_fd, 64).decode("latin-1"))
            if self._pending_keys:
                return self._pending_keys.pop(0)
            if deadline is not None and time.monotonic() >= deadline:
                return None


def split_keys(typed: str) -> list[str]:
    """The actions of keys read in one go (several keys can arrive together)."""
    actions = []
    position = 0
    while position < len(typed):
        key = (
            typed[position : position + 3]
            if typed.startswith("\x1b[", position)
            else typed[position]
        )
        position += len(key)
        if key in _KEYS:
            actions.append(_KEYS[key])
    return actions


_KEYS = {
    " ": "pause", "q": "quit", "Q": "quit", "\x03": "quit",
    "\x1b[C": "forward", "\x1b[D": "back", "n": "next", "p": "previous",
}  # fmt: skip


class _Terminated(Exception):
    """SIGINT, SIGTERM or SIGHUP arrived during replay."""


def play_in_terminal(player: Player, start: float) -> None:
    """Run ``player`` with the terminal in cbreak mode, restoring it afterwards.

    The terminal's settings and every mode the recording could set are
    restored on every way out: the end, ``q``, Ctrl-C (SIGINT), SIGTERM,
    SIGHUP and errors alike.
    """
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)

    def terminated(signum: int, frame: object) -> None:
        raise _Terminated(signum)

    # SIGINT too: a replay started from a process that ignores it (a background job, a
    # script) must still stop on Ctrl-C, which cbreak mode turns into SIGINT.
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    handlers = {sig: signal.signal(sig, terminated) for sig in stops}
    try:
        tty.setcbreak(fd, termios.TCSANOW)  # keep keys typed while starting
        player.play(start)
    except (KeyboardInterrupt, _Terminated):
        pass  # an interrupted replay ends like a finished one
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        restore_terminal(sys.stdout)


def restore_terminal(out: TextIO) -> None:
    """Undo whatever a replayed recording left set in the terminal ``out`` (see
    :data:`TERMINAL_RESTORE`)."""
    with contextlib.suppress(OSError, ValueError):
        out.write(TERMINAL_RESTORE + "\r\n")
        out.flush()
