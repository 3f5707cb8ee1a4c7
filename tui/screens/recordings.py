"""Recordings: recorded sessions, filtered by user, target, date and command text.

One filter line: ``user=alice target=web01 since=2d`` narrows the sessions;
any other words are command text, searched in the commands extracted from
the recordings (then each matching command is a row, with its time). Enter
or ``o`` opens the replayer, at the matching command when there is one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Input, Label

from gateway.config import DURATION_PATTERN, duration_seconds
from gateway.domain.operators import SEE_SESSIONS
from gateway.domain.recordings.service import CommandHit, RecordingInfo
from tui.screens.replay import ReplayScreen, clock, command_moment
from tui.screens.section import SectionScreen
from tui.text import cell

#: Sessions listed at most (the newest that match); command hits are looked for among them.
LIST_LIMIT = 500
_SESSION_COLUMNS = ("Session", "User", "Target", "Account", "Lane", "Kind", "Started", "Status",
                    "Sealed")  # fmt: skip
#: With command text, the match comes right after the id, so it shows at 80 columns.
_HIT_COLUMNS = ("Session", "At", "Command", *_SESSION_COLUMNS[1:])


def _kind(info: RecordingInfo) -> Text | str:
    """The session kind; a break-glass session stands out, as its review starts here."""
    if info.break_glass:
        return Text(f"{info.kind} break-glass", style="bold red")
    return info.kind


class FilterError(ValueError):
    """A filter line that cannot be understood; the message says how to write it."""


@dataclass(frozen=True)
class RecordingFilter:
    """What the filter line asks for."""

    user: str | None = None
    target: str | None = None
    #: ``since=`` as typed: an age (``2d``) or an ISO date/time.
    since: str | None = None
    #: Command text (the words that are not ``key=value`` filters).
    text: str = ""

    @classmethod
    def parse(cls, line: str) -> RecordingFilter:
        """Read ``user=NAME target=NAME since=AGE|DATE`` and command words, in any order.

        Raises FilterError. Other ``word=value`` tokens are command text
        (``PATH=/tmp make`` searches for that command).
        """
        fields: dict[str, str] = {}
        words = []
        for token in line.split():
            key, equals, value = token.partition("=")
            if equals and key in ("user", "target", "since"):
                if not value:
                    raise FilterError(f"{key}= needs a value, e.g. {key}={_EXAMPLES[key]}")
                fields[key] = value
            else:
                words.append(token)
        found = cls(fields.get("user"), fields.get("target"), fields.get("since"), " ".join(words))
        found.since_time(datetime.now(UTC))  # a bad since= is reported now, not at each refresh
        return found

    def since_time(self, now: datetime) -> datetime | None:
        """The earliest start time asked for, or None."""
        if self.since is None:
            return None
        try:
            if re.match(DURATION_PATTERN, self.since):
                return now - timedelta(seconds=duration_seconds(self.since))
            when = datetime.fromisoformat(self.since)
        except (ValueError, OverflowError):
            raise FilterError(
                f"since={self.since}: give an age (30m, 12h, 7d) or a date (2026-11-23)"
            ) from None
        return when if when.tzinfo else when.replace(tzinfo=UTC)


_EXAMPLES = {"user": "alice", "target": "web01", "since": "2d"}


@dataclass(frozen=True)
class _Row:
    """One table row: a session, and the command that matched when searching."""

    info: RecordingInfo
    hit: CommandHit | None


@dataclass(frozen=True)
class _Found:
    """What one load found, and for which filter (a newer filter may have been set since)."""

    query: RecordingFilter
    rows: list[_Row]


class RecordingsScreen(SectionScreen):
    """Auditors and admins find recorded sessions here and open them in the replayer."""

    view_roles = SEE_SESSIONS
    purpose = "see recordings"
    # The table has focus first, so the section number keys work until "/" is pressed.
    AUTO_FOCUS = "#recordings"
    DEFAULT_CSS = """
    RecordingsScreen #filter-status {
        padding: 0 1;
        color: $text-muted;
    }
    """
    BINDINGS = [
        Binding("o", "open", "Replay"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("escape", "leave_filter", "Table", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._filter = RecordingFilter()
        self._rows: list[_Row] = []
        self._searching: bool | None = None  # which columns the table has
        #: Why the last filter typed was not applied; shown until a filter is applied.
        self._problem: str | None = None

    def compose_section(self) -> ComposeResult:
        yield Label("Recorded sessions", classes="section-title")
        yield Input(
            placeholder="/ filter: user=alice target=web01 since=2d, other words: command text",
            id="filter",
        )
        yield Label("", id="filter-status")
        yield DataTable(id="recordings", cursor_type="row", zebra_stripes=True)

    def load(self) -> _Found:
        query = self._filter
        sessions = self.actions.recordings(
            user=query.user,
            target=query.target,
            since=query.since_time(datetime.now(UTC)),
            limit=LIST_LIMIT,
        )
        if not query.text:
            return _Found(query, [_Row(info, None) for info in sessions])
        by_id = {info.session_id: info for info in sessions}
        hits = self.actions.search_commands(query.text)
        return _Found(query, [_Row(by_id[h.session_id], h) for h in hits if h.session_id in by_id])

    def show(self, data: object) -> None:
        assert isinstance(data, _Found)
        if data.query != self._filter:
            return  # read for the previous filter; the next refresh reads the new one
        self._show_status(self._summary(data))
        searching = bool(data.query.text)
        if searching == self._searching and data.rows == self._rows:
            return  # unchanged: keep the table (and the user's place in it) as it is
        table = self.query_one("#recordings", DataTable)
        if searching != self._searching:
            table.clear(columns=True)
            table.add_columns(*(_HIT_COLUMNS if searching else _SESSION_COLUMNS))
            self._searching = searching
        keep = table.cursor_row
        table.clear()
        self._rows = data.rows
        for row in data.rows:
            table.add_row(*self._cells(row))
        if data.rows:
            table.move_cursor(row=min(keep, len(data.rows) - 1))

    @staticmethod
    def _cells(row: _Row) -> list[object]:
        info = row.info
        cells: list[object] = [
            info.session_id[:12], cell(info.user, 20), cell(info.target, 20),
            cell(info.account, 16), info.lane, _kind(info), f"{info.started_at:%Y-%m-%d %H:%M}",
            info.status, "yes" if info.sha256 else "no",
        ]  # fmt: skip
        if row.hit is not None:
            cells[1:1] = [clock(row.hit.offset, hours=row.hit.offset >= 3600), cell(row.hit.text)]
        return cells

    @staticmethod
    def _summary(found: _Found) -> str:
        count = len(found.rows)
        if found.query.text:
            sessions = len({row.info.session_id for row in found.rows})
            return (
                f"{count} command{'s' * (count != 1)} matching {found.query.text!r} "
                f"in {sessions} session{'s' * (sessions != 1)}"
            )
        return f"{count} recorded session{'s' * (count != 1)}"

    # -- filtering -----------------------------------------------------------

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            self._filter = RecordingFilter.parse(event.value)
        except FilterError as exc:
            self._problem = str(exc)
            self._show_status("")
            return
        self._problem = None
        self._show_status("Searching...")
        self.query_one("#recordings", DataTable).focus()
        self.refresh_data()

    def _show_status(self, text: str) -> None:
        label = self.query_one("#filter-status", Label)
        label.set_class(self._problem is not None, "problem")
        # cell(): the filter text is echoed, and "[" in it must not be read as markup.
        label.update(cell(self._problem if self._problem is not None else text, 200))

    def action_filter(self) -> None:
        if self.allowed:
            self.query_one("#filter", Input).focus()

    def action_leave_filter(self) -> None:
        if self.allowed:
            self.query_one("#recordings", DataTable).focus()

    # -- opening -----------------------------------------------------------------

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        if not self.allowed:
            return
        table = self.query_one("#recordings", DataTable)
        if not self._rows or not 0 <= table.cursor_row < len(self._rows):
            self.notify("No recorded session is selected.", severity="warning")
            return
        row = self._rows[table.cursor_row]
        at = command_moment(row.hit.offset) if row.hit is not None else 0.0
        self.app.push_screen(ReplayScreen(row.info.session_id, at=at))
