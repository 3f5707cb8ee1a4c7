"""The replayer: a recorded session played through a terminal emulator into the console.

Opened from Recordings (and from other sections) with
``ReplayScreen(session_id)``. Opening goes through
``RecordingService.open_for_review(purpose="replayed")``: the sha256 of a
sealed recording is checked and the access is written to the audit trail
before a single byte is shown; if either fails, nothing is shown.

The recording is never written to the auditor's terminal: it is fed to a
:class:`~recordings.terminal.TerminalModel` and drawn cell by cell by
:class:`~tui.widgets.TerminalView`.

Playback runs in thread workers, one step at a time: a timer asks for
"play forward to T" steps while playing, seeks rebuild the screen at a
moment through the recording's index (``screen_at``). Every step returns a
drawn, immutable :class:`~tui.widgets.TerminalImage`, so the UI never reads
an emulator a worker is feeding.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widget import Widget
from textual.widgets import DataTable, Input, Label

from gateway.domain.operators import SEE_SESSIONS
from gateway.domain.recordings.service import LoggedCommand, RecordingInfo
from gateway.errors import PamgateError
from recordings.asciicast import RecordingError
from recordings.player import (
    JUMP_LEAD,
    SEEK_STEP,
    SEEK_TAIL,
    PlainRecording,
    events_from,
    screen_at,
)
from recordings.terminal import TerminalModel, parse_size
from tui.screens.section import SectionScreen, deliver
from tui.tables import ListTable
from tui.text import cell
from tui.widgets import TerminalImage, TerminalView

#: Seconds between playback steps while playing.
TICK_SECONDS = 0.05
#: Playback speeds offered by + and -.
SPEEDS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
#: Escape sequences (CSI, OSC, two-character escapes), removed from output searched as text.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]")
#: Below this many columns beside the recording, the command list is an overlay (``c``).
COMMANDS_MIN_WIDTH = 24
#: The command list's width at most, beside the recording or over it.
COMMANDS_MAX_WIDTH = 40
NO_COMMANDS = "no commands extracted"
#: Actions on keys the search field needs while it is being typed in.
_TYPING_KEYS_ACTIONS = frozenset({"play_pause", "seek", "seek_to", "seek_to_end"})
#: Session kinds recorded without a pty: their line feeds do not return the carriage.
NO_PTY_KINDS = frozenset({"exec"})
#: Playing forward past this much output rebuilds the screen through the index instead
#: (its cost does not grow with the output skipped).
ADVANCE_BY_SEEK = 4 * SEEK_TAIL


def clock(seconds: float, *, hours: bool = False) -> str:
    """``mm:ss``, or ``h:mm:ss`` when ``hours`` (for recordings an hour or longer)."""
    whole = int(max(seconds, 0.0))
    if hours:
        return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
    return f"{whole // 60:02d}:{whole % 60:02d}"


def command_moment(offset: float) -> float:
    """Where to show a command: just before its Enter, so the typed line is on screen."""
    return max(offset - JUMP_LEAD, 0.0)


def _resize(terminal: TerminalModel, size: str) -> None:
    parsed = parse_size(size)
    if parsed is not None:
        terminal.resize(*parsed)


class Playback:
    """A recording opened for replay: the terminal at the current moment.

    Every method blocks (file reads) and is meant for a thread worker; the
    screen runs one at a time. Each returns the screen drawn as an image.
    """

    def __init__(self, recording: PlainRecording, *, newline_returns: bool = False) -> None:
        """``newline_returns``: the session had no pty (exec), so its output's line feeds
        return the carriage as the viewer's terminal would (no staircase)."""
        self._recording = recording
        self._newline_returns = newline_returns
        self.index = recording.index()
        self.position = 0.0
        self._terminal, self._offset = self._screen_at(0.0)

    def _screen_at(self, moment: float) -> tuple[TerminalModel, int]:
        return screen_at(
            self._recording.path, self.index, moment, newline_returns=self._newline_returns
        )

    @property
    def duration(self) -> float:
        return self.index.duration

    def image(self) -> TerminalImage:
        """The screen at :attr:`position`."""
        return TerminalImage.of(self._terminal)

    def seek(self, moment: float) -> TerminalImage:
        """Rebuild the screen as it was at ``moment`` (clamped to the recording)."""
        moment = min(max(moment, 0.0), self.duration)
        self._terminal, self._offset = self._screen_at(moment)
        self.position = moment
        return self.image()

    def advance(self, moment: float) -> TerminalImage:
        """Play forward to ``moment``: feed the output recorded in between."""
        moment = min(moment, self.duration)
        if moment <= self.position:
            return self.image()
        if self._output_between(self.position, moment) > ADVANCE_BY_SEEK:
            return self.seek(moment)
        events = events_from(self._recording.path, self._offset)
        with contextlib.closing(events):
            for event_time, code, data, next_offset in events:
                if event_time > moment:
                    break
                if code == "o":
                    self._terminal.feed(data)
                elif code == "r":
                    _resize(self._terminal, data)
                self._offset = next_offset
        self.position = moment
        return self.image()

    def _output_between(self, start: float, end: float) -> int:
        """Output characters between two moments, to the index's resolution."""
        first, last = self.index.at_or_before(start), self.index.at_or_before(end)
        if last is None:
            return 0
        return last.output_chars - (first.output_chars if first is not None else 0)

    def find_in_output(self, text: str) -> list[float]:
        """Moments at which output containing ``text`` (case-insensitive) was printed.

        Searched in the output with escape sequences removed, one event at a time (text
        split across two output events is not found; the command log is searched too)."""
        wanted = text.casefold()
        found: list[float] = []
        events = events_from(self._recording.path, self.index.header_end)
        with contextlib.closing(events):
            for event_time, code, data, _ in events:
                if code == "o" and wanted in _ESCAPES.sub("", data).casefold():
                    found.append(event_time)
        return found

    def close(self) -> None:
        """Remove the unpacked copy of a compressed recording."""
        self._recording.close()


class Timeline(Widget):
    """One line: playing or paused, position / duration, speed, and a bar with command marks.

    A click on the bar asks to seek there (:class:`Timeline.Seek`).
    """

    DEFAULT_CSS = """
    Timeline {
        height: 1;
        padding: 0 1;
        background: $panel;
    }
    Timeline > .timeline--elapsed { color: $accent; }
    Timeline > .timeline--remaining { color: $text-muted; }
    Timeline > .timeline--mark { color: $warning; text-style: bold; }
    Timeline > .timeline--position { color: $text; text-style: bold; }
    """
    COMPONENT_CLASSES = {
        "timeline--elapsed",
        "timeline--remaining",
        "timeline--mark",
        "timeline--position",
    }

    class Seek(Message):
        """The user clicked the bar at ``moment`` seconds."""

        def __init__(self, moment: float) -> None:
            super().__init__()
            self.moment = moment

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002 - Textual's name
        super().__init__(id=id)
        self.position = 0.0
        self.duration = 0.0
        self.marks: tuple[float, ...] = ()
        self.playing = False
        self.speed = 1.0

    def set_state(
        self,
        *,
        position: float,
        duration: float,
        playing: bool,
        speed: float,
        marks: tuple[float, ...] | None = None,
    ) -> None:
        """Show a new position (and, when given, new command marks)."""
        self.position, self.duration = position, duration
        self.playing, self.speed = playing, speed
        if marks is not None:
            self.marks = marks
        self.refresh()

    def _label(self) -> str:
        hours = self.duration >= 3600
        state = "▶" if self.playing else "❚❚"
        return (
            f"{state} {clock(self.position, hours=hours)} / {clock(self.duration, hours=hours)}"
            f"  x{self.speed:g} "
        )

    def render(self) -> Text:
        label = self._label()
        width = self.content_size.width - len(label)
        if width < 3:
            return Text(label)
        styles = {
            name: self.get_component_rich_style(f"timeline--{name}")
            for name in ("elapsed", "remaining", "mark", "position")
        }
        cells = ["─"] * width
        kinds = ["remaining"] * width
        here = self._column(self.position, width)
        for column in range(here):
            cells[column], kinds[column] = "━", "elapsed"
        for mark in self.marks:
            column = self._column(mark, width)
            cells[column], kinds[column] = "┃", "mark"
        cells[here], kinds[here] = "●", "position"
        bar = Text(label)
        for char, kind in zip(cells, kinds, strict=True):
            bar.append(char, styles[kind])
        return bar

    def _column(self, moment: float, width: int) -> int:
        if self.duration <= 0:
            return 0
        return round(min(max(moment / self.duration, 0.0), 1.0) * (width - 1))

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        label = len(self._label())
        width = self.content_size.width - label
        if offset is None or width < 3 or offset.x < label or self.duration <= 0:
            return
        self.post_message(self.Seek((offset.x - label) / (width - 1) * self.duration))


@dataclass(frozen=True)
class _Opened:
    """What the opening worker hands to the UI."""

    info: RecordingInfo
    commands: list[LoggedCommand]
    playback: Playback
    image: TerminalImage


class ReplayScreen(SectionScreen):
    """Replays one recorded session; auditors and admins only.

    Opens paused at ``at`` seconds (the start by default).
    """

    view_roles = SEE_SESSIONS
    purpose = "replay recordings"
    AUTO_FOCUS = "#commands"
    # Priority: the command list would otherwise take left/right/home/end for itself.
    BINDINGS = [
        Binding("space", "play_pause", "Play", priority=True),
        Binding("left", "seek(-1)", "-5s", key_display="←", priority=True),
        Binding("right", "seek(1)", "+5s", key_display="→", priority=True),
        Binding("home", "seek_to(0)", "Start", priority=True, show=False),
        Binding("end", "seek_to_end", "End", priority=True, show=False),
        Binding("plus,equals_sign", "speed(1)", "Faster", key_display="+", show=False),
        Binding("minus", "speed(-1)", "Slower", key_display="-", show=False),
        Binding("n", "command(1)", "Next cmd/match"),
        Binding("p", "command(-1)", "Prev cmd/match", show=False),
        Binding("c", "toggle_commands", "Commands"),
        Binding("slash", "search", "Search", key_display="/"),
        Binding("escape,q", "back", "Back"),
    ]
    DEFAULT_CSS = """
    ReplayScreen TitleBar {
        display: none;
    }
    ReplayScreen #replay-info {
        height: 1;
        padding: 0 1;
        color: $text-muted;
    }
    ReplayScreen #replay-problem {
        padding: 0 1;
        display: none;
    }
    ReplayScreen #replay-body {
        height: 1fr;
        layers: base overlay;
    }
    ReplayScreen #terminal {
        width: 1fr;
        height: 1fr;
    }
    ReplayScreen #commands {
        width: 32;
        height: 1fr;
        border-left: vkey $panel-lighten-2;
    }
    ReplayScreen #replay-body.narrow #commands {
        dock: right;
        layer: overlay;
        max-width: 70%;
        background: $panel;
    }
    ReplayScreen #search {
        display: none;
        height: 1;
        border: none;
        padding: 0 1;
    }
    ReplayScreen #search.open {
        display: block;
    }
    """

    def __init__(self, session_id: str, *, at: float = 0.0) -> None:
        super().__init__()
        self.session_id = session_id
        self._start_at = at
        self._playback: Playback | None = None
        self._commands: list[LoggedCommand] = []
        self._opening = False
        self._closed = False
        self._position = 0.0
        self._playing = False
        self._speed_index = SPEEDS.index(1.0)
        self._info: RecordingInfo | None = None
        # One playback step runs at a time; a seek asked for meanwhile waits here.
        self._busy = False
        self._pending_seek: float | None = None
        #: monotonic() at which playback was last at ``_position`` (while playing).
        self._clock = 0.0
        #: The recording's width as last drawn (the command list goes beside it if it fits).
        self._recording_width = 0
        #: The operator's choice with ``c``; None: shown when it fits beside the recording.
        self._commands_wanted: bool | None = None
        #: The search (``/``): its text, and the moments that match, in order.
        self._search = ""
        self._matches: list[float] = []

    # -- layout and opening ------------------------------------------------

    def compose_section(self) -> ComposeResult:
        yield Label(f"Opening session {cell(self.session_id, 32)}...", id="replay-info")
        yield Label("", id="replay-problem", classes="problem")
        with Horizontal(id="replay-body"):
            yield TerminalView(id="terminal")
            yield ListTable("At", "Command", id="commands", zebra=False)
        yield Input(placeholder="search the commands and the output (Enter; Esc closes)",
                    id="search")  # fmt: skip
        yield Timeline(id="timeline")

    def on_mount(self) -> None:
        # SectionScreen.on_mount runs too (after this), and calls refresh_data.
        if self.allowed:
            self.set_interval(TICK_SECONDS, self._tick)

    @property
    def keeps_console_awake(self) -> bool:
        """While it plays, the replay is being watched: the idle lock waits."""
        return self._playing

    def on_resize(self) -> None:
        self._lay_out()

    def _lay_out(self) -> None:
        """The command list beside the recording if both fit, else an overlay on the right
        shown with ``c``: the recording gets its full width either way."""
        if not self.allowed:
            return
        body = self.query_one("#replay-body", Horizontal)
        commands = self.query_one("#commands", ListTable)
        room = self.size.width - self._recording_width - 1  # 1: the view's scrollbar
        fits = room >= COMMANDS_MIN_WIDTH
        body.set_class(not fits, "narrow")
        commands.styles.width = min(room, COMMANDS_MAX_WIDTH) if fits else COMMANDS_MAX_WIDTH
        shown = fits if self._commands_wanted is None else self._commands_wanted
        commands.display = shown

    def on_unmount(self) -> None:
        self._closed = True
        # A step in flight still reads the file; it closes the playback when it is done.
        if self._playback is not None and not self._busy:
            self._playback.close()

    def refresh_data(self) -> None:
        """Open the recording once: a replay is not polled, and each opening is audited."""
        if not self._opening:
            self._opening = True
            self._open()

    def load(self) -> None:
        """Unused: the recording is read by :meth:`_open` and the playback steps."""

    def show(self, data: object) -> None:
        """Unused: see :meth:`load`."""

    @property
    def ready(self) -> bool:
        """True when the recording is open and no playback step or seek is pending."""
        return self._playback is not None and not self._busy and self._pending_seek is None

    @property
    def position(self) -> float:
        """Seconds into the recording shown now."""
        return self._position

    @property
    def duration(self) -> float:
        """The recording's length in seconds (0 until it is open)."""
        return self._playback.duration if self._playback is not None else 0.0

    @property
    def playing(self) -> bool:
        return self._playing

    @property
    def speed(self) -> float:
        return SPEEDS[self._speed_index]

    @work(thread=True, group="replay-open")
    def _open(self) -> None:
        actions = self.actions
        try:
            info = actions.open_recording(self.session_id, purpose="replayed")
            assert info.path is not None  # open_for_review refuses sessions without a file
            recording = PlainRecording(info.path)
            try:
                playback = Playback(recording, newline_returns=info.kind in NO_PTY_KINDS)
                if self._start_at > 0:
                    playback.seek(self._start_at)
                opened = _Opened(
                    info, actions.commands(info.session_id), playback, playback.image()
                )
            except BaseException:
                recording.close()
                raise
        except (PamgateError, RecordingError, OSError) as exc:
            deliver(self, self._failed, f"Cannot replay this recording: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - a damaged recording must not end the console
            deliver(self, self._failed, f"Cannot read this recording: {exc!r}")
            return
        deliver(self, self._opened, opened)

    def _failed(self, message: str) -> None:
        if self._closed:
            return
        problem = self.query_one("#replay-problem", Label)
        problem.update(cell(message, 300))
        problem.display = True
        self.query_one("#replay-info", Label).update("")

    def _opened(self, opened: _Opened) -> None:
        if self._closed:
            opened.playback.close()
            return
        self._commands, self._playback = opened.commands, opened.playback
        self._info = opened.info
        self._position = opened.playback.position
        self.query_one("#replay-info", Label).update(self._describe(opened.info))
        table = self.query_one("#commands", ListTable)
        hours = opened.playback.duration >= 3600
        rows = [(clock(c.offset, hours=hours), cell(c.text)) for c in self._commands]
        # Fixed widths: DataTable measures auto-width columns later, when idle, and rows drawn
        # before that keep the old widths in its cache (seen as cut times at random).
        table.clear(columns=True)
        table.add_column("At", width=max([len("At"), *(len(at) for at, _ in rows)]))
        texts = [t.cell_len for _, t in rows] or [len(NO_COMMANDS)]
        # A live session's, or one whose final extraction pass has not stored its log.
        heading = "Command" if opened.info.commands_final else "Command (so far)"
        table.add_column(heading, width=max([len(heading), *texts]))
        for number, row in enumerate(rows):
            table.add_row(*row, key=str(number))
        if not self._commands:
            table.add_row("", Text(NO_COMMANDS, style="italic"), key="none")
        # Opened at a command (from a search): the list starts on it.
        shown = [
            n for n, c in enumerate(self._commands) if command_moment(c.offset) <= self._position
        ]
        if shown:
            table.move_cursor(row=shown[-1])
        self._show_image(opened.image)
        self._show_timeline(marks=tuple(c.offset for c in self._commands))

    def _show_image(self, image: TerminalImage) -> None:
        self.query_one("#terminal", TerminalView).show_image(image)
        if image.width != self._recording_width:
            self._recording_width = image.width
            self._lay_out()

    @staticmethod
    def _describe(info: RecordingInfo) -> Text:
        """One line that fits 80 columns: who, where, how it ended, sealed or not, when, id."""
        kind = info.kind if info.lane == "human" else f"{info.lane}/{info.kind}"
        line = cell(f"{info.user}  {info.account}@{info.target}  {kind}  {info.status}  ", 100)
        if info.sha256:
            line.append("sealed", style="bold")
        else:
            line.append("NOT SEALED (shown as written)", style="bold red")
        line.append(f"  {info.started_at:%Y-%m-%d %H:%M:%S}  {info.session_id[:12]}")
        return line

    # -- playback ------------------------------------------------------------

    def _tick(self) -> None:
        playback = self._playback
        if playback is None or not self._playing or self._busy or self._pending_seek is not None:
            return
        now = time.monotonic()
        target = min(self._position + (now - self._clock) * self.speed, playback.duration)
        # The clock moves with the target asked for, so time spent in the worker is not lost.
        self._clock = now
        self._step(partial(playback.advance, target), restart_clock=False)

    def _seek(self, moment: float) -> None:
        """Show the screen at ``moment``; play goes on from there if it was playing."""
        if self._playback is None:
            return
        moment = min(max(moment, 0.0), self._playback.duration)
        if self._busy:
            self._pending_seek = moment
            self._show_timeline(position=moment)
            return
        self._step(partial(self._playback.seek, moment), restart_clock=True)

    def _step(self, step: Callable[[], TerminalImage], *, restart_clock: bool) -> None:
        self._busy = True
        self._run_step(step, restart_clock)

    @work(thread=True, group="replay-step")
    def _run_step(self, step: Callable[[], TerminalImage], restart_clock: bool) -> None:
        playback = self._playback
        assert playback is not None
        try:
            image = step()
        except Exception as exc:  # noqa: BLE001 - hostile or damaged input must not end the console
            deliver(self, self._step_failed, str(exc) or repr(exc))
            return
        deliver(self, self._stepped, image, playback.position, restart_clock)

    def _step_failed(self, message: str) -> None:
        self._busy = False
        self._playing = False
        if self._closed and self._playback is not None:
            self._playback.close()
            return
        self.notify(f"Replay stopped: {message}", severity="error")
        self._show_timeline()

    def _stepped(self, image: TerminalImage, position: float, restart_clock: bool) -> None:
        self._busy = False
        assert self._playback is not None
        if self._closed:
            self._playback.close()
            return
        self._position = position
        if restart_clock:
            self._clock = time.monotonic()
        if position >= self._playback.duration:
            self._playing = False
        self._show_image(image)
        if self._pending_seek is not None:
            moment, self._pending_seek = self._pending_seek, None
            self._seek(moment)
            return
        self._show_timeline()

    def _show_timeline(
        self, *, position: float | None = None, marks: tuple[float, ...] | None = None
    ) -> None:
        self.query_one("#timeline", Timeline).set_state(
            position=self._position if position is None else position,
            duration=self._playback.duration if self._playback is not None else 0.0,
            playing=self._playing,
            speed=self.speed,
            marks=marks,
        )

    def _target(self) -> float:
        """Where the next relative seek starts from: a seek still pending, or the position."""
        return self._pending_seek if self._pending_seek is not None else self._position

    # -- actions ----------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Without the role there is nothing to play: only "back" is offered.
        if action != "back" and not self.allowed:
            return False
        # Typing a search: space and the arrows edit it, not the replay.
        return not (action in _TYPING_KEYS_ACTIONS and isinstance(self.focused, Input))

    def action_play_pause(self) -> None:
        if self._playback is None:
            return
        self._playing = not self._playing
        self._clock = time.monotonic()
        if self._playing and self._target() >= self._playback.duration:
            self._seek(0.0)  # play again from the start
        self._show_timeline()

    def action_seek(self, steps: int) -> None:
        self._seek(self._target() + steps * SEEK_STEP)

    def action_seek_to(self, moment: float) -> None:
        self._seek(moment)

    def action_seek_to_end(self) -> None:
        if self._playback is not None:
            self._seek(self._playback.duration)

    def action_speed(self, change: int) -> None:
        self._speed_index = min(max(self._speed_index + change, 0), len(SPEEDS) - 1)
        self._show_timeline()

    def action_command(self, direction: int) -> None:
        """Jump to the next (1) or previous (-1) command, or search match while searching."""
        here = self._target()
        if self._search:
            self._jump_to_match(direction, here)
            return
        if direction > 0:
            later = [n for n, c in enumerate(self._commands) if command_moment(c.offset) > here]
            chosen = later[0] if later else None
        else:
            # Half a second of slack, so "previous" from a command goes to the one before it.
            earlier = [n for n, c in enumerate(self._commands) if c.offset < here - 0.5]
            chosen = earlier[-1] if earlier else None
        if chosen is None:
            return
        self.query_one("#commands", DataTable).move_cursor(row=chosen)
        self._seek(command_moment(self._commands[chosen].offset))

    def action_toggle_commands(self) -> None:
        table = self.query_one("#commands", ListTable)
        self._commands_wanted = not table.display
        self._lay_out()
        if table.display:
            table.focus()

    # -- search ------------------------------------------------------------------

    def action_search(self) -> None:
        field = self.query_one("#search", Input)
        field.add_class("open")
        field.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        field = self.query_one("#search", Input)
        field.remove_class("open")
        self.query_one("#commands", ListTable).focus()
        self._search, self._matches = text, []
        if not text:
            self._show_search_status("")
            return
        if self._playback is None:
            return
        self._show_search_status(f"Searching for {text!r}...")
        self._find(self._playback, text)

    @work(thread=True, exclusive=True, group="replay-search")
    def _find(self, playback: Playback, text: str) -> None:
        try:
            in_output = playback.find_in_output(text)
        except (OSError, RecordingError) as exc:
            deliver(self, self._show_search_status, f"Search failed: {exc}")
            return
        deliver(self, self._found, text, in_output)

    def _found(self, text: str, in_output: list[float]) -> None:
        if text != self._search:
            return  # a newer search was started
        wanted = text.casefold()
        commands = [command_moment(c.offset) for c in self._commands
                    if wanted in c.text.casefold()]  # fmt: skip
        self._matches = sorted({*commands, *in_output})
        count = len(self._matches)
        self._show_search_status(
            f"{count} match{'es' * (count != 1)} for {text!r} ({len(commands)} in commands, "
            f"{len(in_output)} in output): n next, p previous, / new search"
        )
        if self._matches:
            self._jump_to_match(1, self._target() - 0.001)

    def _jump_to_match(self, direction: int, here: float) -> None:
        if direction > 0:
            later = [m for m in self._matches if m > here + 0.001]
            chosen = later[0] if later else None
        else:
            earlier = [m for m in self._matches if m < here - 0.5]
            chosen = earlier[-1] if earlier else None
        if chosen is None:
            self.notify(f"No more matches for {self._search!r} that way.", timeout=3)
            return
        self._seek(chosen)

    def _show_search_status(self, text: str) -> None:
        info = self.query_one("#replay-info", Label)
        if text:
            info.update(cell(text, 200))
        elif self._info is not None:
            info.update(self._describe(self._info))

    def action_back(self) -> None:
        field = self.query_one("#search", Input) if self.allowed else None
        if field is not None and field.has_class("open"):
            field.remove_class("open")  # Esc in the search field closes it, not the replay
            self.query_one("#commands", ListTable).focus()
            return
        if self._search:
            self._search, self._matches = "", []
            self._show_search_status("")
            return
        self.dismiss()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        key = event.row_key.value
        if key is not None and key.isdigit() and int(key) < len(self._commands):
            self._seek(command_moment(self._commands[int(key)].offset))

    def on_timeline_seek(self, event: Timeline.Seek) -> None:
        self._seek(event.moment)
