"""Recordings: recorded sessions, filtered by user, target, date and command text.

One filter line: ``user=alice target=web01 since=2d until=2026-11-20
authority=grant:12 breakglass=yes`` narrows the sessions; any other words are
command text, searched in the commands extracted from the recordings (then
each matching command is a row, with its time). Enter or ``o`` opens the
replayer, at the matching command when there is one.

A live session's commands are searched as far as they were extracted when
the session was last indexed; the replayer's own search (``/``) reads the
recording itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rich.console import RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Input, Label

from gateway.config import DURATION_PATTERN, duration_seconds
from gateway.domain.operators import SEE_SESSIONS
from gateway.domain.recordings.service import CommandHit, RecordingInfo
from tui.screens.replay import ReplayScreen, clock, command_moment
from tui.screens.section import SectionScreen
from tui.tables import LiveTable
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
    #: ``until=`` as typed: sessions that started before it (an age or a date/time).
    until: str | None = None
    #: ``authority=``: ``grant:12`` exactly, or a prefix ending in ``:`` (``rule:``).
    authority: str | None = None
    #: ``breakglass=yes`` only emergency sessions; ``no`` none of them.
    breakglass: bool | None = None

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
            if equals and key in _EXAMPLES:
                if not value:
                    raise FilterError(f"{key}= needs a value, e.g. {key}={_EXAMPLES[key]}")
                fields[key] = value
            else:
                words.append(token)
        breakglass = fields.get("breakglass")
        if breakglass is not None and breakglass not in ("yes", "no"):
            raise FilterError(f"breakglass={breakglass}: give breakglass=yes or breakglass=no")
        found = cls(
            fields.get("user"), fields.get("target"), fields.get("since"), " ".join(words),
            until=fields.get("until"), authority=fields.get("authority"),
            breakglass=None if breakglass is None else breakglass == "yes",
        )  # fmt: skip
        # A bad since= or until= is reported now, not at each refresh.
        now = datetime.now(UTC)
        found.since_time(now)
        found.until_time(now)
        return found

    def since_time(self, now: datetime) -> datetime | None:
        """The earliest start time asked for, or None."""
        return _moment("since", self.since, now)

    def until_time(self, now: datetime) -> datetime | None:
        """The start time sessions must be before, or None. A date alone means the end of
        that day: ``until=2026-11-20`` includes the 20th."""
        if self.until is not None and re.fullmatch(r"\d{4}-\d\d-\d\d", self.until):
            day = _moment("until", self.until, now)
            return day + timedelta(days=1) if day is not None else None
        return _moment("until", self.until, now)

    def authority_query(self) -> str | None:
        """What the store is asked for: ``breakglass=yes`` is the ``breakglass:`` prefix."""
        if self.breakglass and not self.authority:
            return "breakglass:"
        return self.authority

    def keeps(self, info: RecordingInfo) -> bool:
        """The filters the store is not asked for (``breakglass=no``)."""
        return self.breakglass is None or info.break_glass == self.breakglass


def _moment(key: str, typed: str | None, now: datetime) -> datetime | None:
    """An age before ``now`` (``30m``, ``7d``) or an ISO date/time (UTC unless it says)."""
    if typed is None:
        return None
    try:
        if re.match(DURATION_PATTERN, typed):
            return now - timedelta(seconds=duration_seconds(typed))
        when = datetime.fromisoformat(typed)
    except (ValueError, OverflowError):
        raise FilterError(
            f"{key}={typed}: give an age (30m, 12h, 7d) or a date (2026-11-23)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


_EXAMPLES = {
    "user": "alice", "target": "web01", "since": "2d", "until": "2026-11-20",
    "authority": "grant:12", "breakglass": "yes",
}  # fmt: skip


@dataclass(frozen=True)
class _Row:
    """One table row: a session, and the command that matched when searching."""

    info: RecordingInfo
    hit: CommandHit | None

    @property
    def key(self) -> str:
        """The session, and the command's moment when the row is a search hit."""
        if self.hit is None:
            return self.info.session_id
        return f"{self.info.session_id}@{self.hit.offset!r}#{self.hit.text}"


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
        Binding("o", "open_recording", "Open recording"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("escape", "leave_filter", "Table", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._filter = RecordingFilter()
        self._rows: dict[str, _Row] = {}
        self._searching: bool | None = None  # which columns the table has
        #: Why the last filter typed was not applied; shown until a filter is applied.
        self._problem: str | None = None

    def compose_section(self) -> ComposeResult:
        yield Label("Recorded sessions", classes="section-title")
        yield Input(
            placeholder="/ filter: user= target= since= until= authority= breakglass=yes, "
            "other words: command text",
            id="filter",
        )
        yield Label("", id="filter-status")
        yield LiveTable(*_SESSION_COLUMNS, id="recordings")

    def load(self) -> _Found:
        query = self._filter
        now = datetime.now(UTC)
        sessions = [info for info in self.actions.recordings(
            user=query.user, target=query.target, since=query.since_time(now),
            until=query.until_time(now), authority=query.authority_query(), limit=LIST_LIMIT,
        ) if query.keeps(info)]  # fmt: skip
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
        table = self.query_one("#recordings", LiveTable)
        if searching != self._searching:
            table.set_columns(_HIT_COLUMNS if searching else _SESSION_COLUMNS)
            self._searching = searching
        self._rows = {}
        for row in data.rows:
            key = row.key
            while key in self._rows:  # the same command twice at one moment: keys stay unique
                key += "+"
            self._rows[key] = row
        # By key: a recording that arrives above the highlighted one does not move it.
        table.refill([(key, self._cells(row)) for key, row in self._rows.items()])

    @staticmethod
    def _cells(row: _Row) -> list[RenderableType]:
        info = row.info
        cells: list[RenderableType] = [
            info.session_id[:12], cell(info.user, 20), cell(info.target, 20),
            cell(info.account, 16), info.lane, _kind(info), f"{info.started_at:%Y-%m-%d %H:%M}",
            info.shown_status, "yes" if info.sha256 else "no",
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
        self.action_open_recording()

    def action_open_recording(self) -> None:
        if not self.allowed:
            return
        row = self._rows.get(self.query_one("#recordings", LiveTable).selected_key or "")
        if row is None:
            self.notify("No recorded session is selected.", severity="warning")
            return
        at = command_moment(row.hit.offset) if row.hit is not None else 0.0
        self.app.push_screen(ReplayScreen(row.info.session_id, at=at))
