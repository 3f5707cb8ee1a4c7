"""Audit: the human and machine trails, live and never mixed, with a filter and chain check.

Each tab shows the newest :data:`WINDOW` events of one trail that match the
filter, newest first. A :class:`TrailWindow` keeps them: a new filter searches
back from the head once, after which each refresh reads only the events
appended since the last one, so a busy trail costs little to watch.
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Input, Static, TabbedContent, TabPane

from gateway.config import parse_since
from gateway.domain.audit.trail import AuditRecord, Trail, VerifyResult
from gateway.domain.operators import SEE_SESSIONS
from gateway.errors import PamgateError
from tui.screens.dialogs import DetailDialog
from tui.screens.section import SectionScreen
from tui.tables import LiveTable, Row
from tui.text import cell

#: Events shown per trail.
WINDOW = 200
#: Events read per step when a new filter searches back, at most (steps start at WINDOW).
SCAN_BATCH = 5000
#: How far back a new filter searches before giving up; older events are for `audit export`.
SCAN_LIMIT = 200_000
#: The stored form of event times; equal-length strings, so they compare like the times.
TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

FILTER_HELP = "filter: actor=NAME action=PREFIX since=30m|12h|7d|ISO-TIME (Enter)"


@dataclass(frozen=True)
class AuditFilter:
    """Which events to show: all of the given conditions hold."""

    #: The actor's exact name (case-insensitive).
    actor: str | None = None
    #: The start of the action, so ``request.`` matches every request event.
    action: str | None = None
    #: The age or time as typed; an age is measured from each refresh, so the window slides.
    since: str | None = None

    def cutoff(self) -> str | None:
        """The oldest event time shown, in the stored form, or None for no limit."""
        if not self.since:
            return None
        return parse_since(self.since, "since=").astimezone(UTC).strftime(TS_FORMAT)

    def matches(self, record: AuditRecord, cutoff: str | None) -> bool:
        """True if ``record`` passes; ``cutoff`` is :meth:`cutoff`, computed once per read."""
        if self.actor is not None and record.actor.casefold() != self.actor.casefold():
            return False
        if self.action is not None and not record.action.startswith(self.action):
            return False
        return cutoff is None or record.ts >= cutoff

    def describe(self) -> str:
        """The filter as it would be typed, or ``none``."""
        given = (("actor", self.actor), ("action", self.action), ("since", self.since))
        return " ".join(f"{key}={value}" for key, value in given if value) or "none"


def parse_filter(text: str) -> AuditFilter:
    """``actor=bob action=request. since=2h`` (any of them, any order); PamgateError if not."""
    values: dict[str, str] = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if not sep or key not in ("actor", "action", "since") or not value:
            raise PamgateError(f"cannot read {word!r} in the filter; use {FILTER_HELP}")
        if key in values:
            raise PamgateError(f"{key}= is given twice in the filter")
        values[key] = value
    found = AuditFilter(**values)
    found.cutoff()  # a bad since= is reported now, not at every refresh
    return found


@dataclass(frozen=True)
class TrailPage:
    """What a trail's tab shows."""

    trail: Trail
    #: Matching events, newest first, at most WINDOW.
    records: list[AuditRecord]
    #: The trail's newest sequence number.
    head: int
    #: False if the search for a new filter stopped at SCAN_LIMIT with fewer than WINDOW found.
    complete: bool
    #: The oldest event searched (1 when the whole trail was).
    searched_from: int


class TrailSource(Protocol):
    """Where a window reads events (an operator's audit reader; an AuditLog in tests)."""

    def head(self, trail: Trail) -> tuple[int, str]: ...

    def events(
        self, trail: Trail, *, after_seq: int = 0, until_seq: int | None = None
    ) -> Iterator[AuditRecord]: ...


class TrailWindow:
    """The newest events of one trail that match a filter, kept up to date incrementally.

    Thread-safe: refreshes run in workers and may overlap when the database is slow.
    """

    def __init__(self, source: TrailSource, trail: Trail) -> None:
        self.trail = trail
        self._source = source
        self._lock = threading.Lock()
        self._query: AuditFilter | None = None
        self._records: deque[AuditRecord] = deque(maxlen=WINDOW)
        self._last_seq = 0
        self._complete = True
        self._searched_from = 1

    def read(self, query: AuditFilter) -> TrailPage:
        """The page for ``query``: searched afresh for a new filter, else brought up to date."""
        with self._lock:
            head, _ = self._source.head(self.trail)
            cutoff = query.cutoff()
            if query != self._query or head < self._last_seq:
                self._search(query, head, cutoff)
            else:
                for record in self._source.events(
                    self.trail, after_seq=self._last_seq, until_seq=head
                ):
                    if query.matches(record, cutoff):
                        self._records.append(record)
                self._last_seq = head
            if cutoff is not None:
                # An age slides with the clock: events that grew too old leave.
                while self._records and self._records[0].ts < cutoff:
                    self._records.popleft()
            # A short search counts as complete once new events have filled the window.
            complete = self._complete or len(self._records) == WINDOW
            records = list(reversed(self._records))
            return TrailPage(self.trail, records, head, complete, self._searched_from)

    def _search(self, query: AuditFilter, head: int, cutoff: str | None) -> None:
        """Search back from ``head`` in growing steps until WINDOW events match."""
        found: list[AuditRecord] = []
        low_limit = max(head - SCAN_LIMIT, 0)
        high, step = head, WINDOW
        too_old = False
        while high > low_limit and len(found) < WINDOW and not too_old:
            low = max(high - step, low_limit)
            batch = list(self._source.events(self.trail, after_seq=low, until_seq=high))
            found[:0] = [record for record in batch if query.matches(record, cutoff)]
            high, step = low, min(step * 2, SCAN_BATCH)
            # Events are appended in time order, so nothing before this batch is recent enough.
            too_old = cutoff is not None and bool(batch) and batch[0].ts < cutoff
        self._complete = len(found) >= WINDOW or high == 0 or too_old
        self._records = deque(found[-WINDOW:], maxlen=WINDOW)
        self._searched_from = high + 1
        self._query = query
        self._last_seq = head


def event_row(record: AuditRecord) -> Row:
    """A table row for an event; every stored text is untrusted (the trail may be tampered)."""
    where = record.target or "-"
    if record.account:
        where = f"{record.account}@{where}"
    # The reason before where and under what: at 120 columns it is on screen (Enter: all).
    return str(record.seq), (
        str(record.seq), _event_time(record.ts), cell(record.actor, 12), cell(record.action, 22),
        cell(record.outcome, 9), cell(record.reason or "", 60), cell(where, 24),
        cell(record.authority or "-", 24),
    )  # fmt: skip


def event_facts(record: AuditRecord) -> list[tuple[str, object]]:
    """An event in full for its detail view: the reason whole, and the event as JSON."""
    try:
        as_json = json.dumps(json.loads(record.to_json()), indent=2, ensure_ascii=False)
    except ValueError:  # details that are not JSON: a tampered row, shown as stored
        as_json = record.details
    return [
        ("Time (UTC)", record.ts), ("Actor", f"{record.actor} ({record.actor_type})"),
        ("Action", record.action), ("Outcome", record.outcome), ("Reason", record.reason),
        ("Authority", record.authority), ("Event (JSON)", as_json),
    ]  # fmt: skip


def _event_time(ts: str) -> Text:
    """``11-23 08:00:05`` from the stored ``2026-11-23T08:00:05.123456Z`` (the year is in
    the detail view: a week's audit does not need it on every row)."""
    if re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", ts):
        return Text(f"{ts[5:10]} {ts[11:19]}")
    return cell(ts, 30)


def verdict_text(result: VerifyResult) -> str:
    """A verification result, said plainly."""
    if result.ok:
        return f"{result.trail} trail OK: {result.count} events verified, the chain is intact."
    return (
        f"{result.trail} trail BROKEN at event {result.first_bad_seq} "
        f"({result.count} events verified before it): {result.problem}"
    )


class AuditScreen(SectionScreen):
    """Auditors and admins read the trails here and check their hash chains."""

    view_roles = SEE_SESSIONS
    purpose = "see the audit trails"
    # V, not v: v records a break-glass verdict. ] and [ switch tabs, as in Identities.
    BINDINGS = [
        Binding("V", "verify", "Verify chain", key_display="V"),
        Binding("right_square_bracket,left_square_bracket", "switch_trail", "Other trail",
                key_display="]"),
        Binding("slash", "edit_filter", "Filter", key_display="/"),
        Binding("enter", "detail", "Detail", key_display="⏎"),
        Binding("escape", "leave_filter", "Table", show=False),
    ]
    #: Start in the table, so the keys above work at once (not typed into the filter).
    AUTO_FOCUS = "#human-events"

    COLUMNS = ("Seq", "Time (UTC)", "Actor", "Action", "Outcome", "Reason", "On", "Authority")

    def __init__(self) -> None:
        super().__init__()
        self._filter = AuditFilter()
        self._windows: dict[Trail, TrailWindow] = {}
        self._windows_lock = threading.Lock()
        self._pages: dict[Trail, TrailPage] = {}
        self._verdicts: dict[Trail, Text] = {}
        self._verifying: set[Trail] = set()

    def compose_section(self) -> ComposeResult:
        yield Input(placeholder=FILTER_HELP, id="filter")
        yield Static("Loading...", id="status", classes="audit-status")
        with TabbedContent(id="trails", initial=Trail.HUMAN.value):
            for trail, title in ((Trail.HUMAN, "Human"), (Trail.MACHINE, "Machine")):
                with TabPane(title, id=trail.value):
                    yield LiveTable(*self.COLUMNS, id=f"{trail.value}-events")

    # -- data ------------------------------------------------------------------

    def load(self) -> dict[Trail, TrailPage]:
        with self._windows_lock:  # loads may overlap; they must share the windows
            if not self._windows:
                reader = self.actions.audit_reader()
                self._windows = {trail: TrailWindow(reader, trail) for trail in Trail}
        query = self._filter
        return {trail: window.read(query) for trail, window in self._windows.items()}

    def show(self, data: object) -> None:
        self._pages = data  # type: ignore[assignment]
        for trail, page in self._pages.items():
            table = self.query_one(f"#{trail.value}-events", LiveTable)
            table.refill([event_row(record) for record in page.records])
        self._show_status()

    @property
    def trail(self) -> Trail:
        """The trail of the active tab."""
        return Trail(self.query_one("#trails", TabbedContent).active)

    def _show_status(self) -> None:
        trail = self.trail
        page = self._pages.get(trail)
        if page is None:
            return
        status = Text(f"{trail.value.capitalize()} trail: {len(page.records)} of {page.head} "
                      "events shown, newest first. Filter: ")  # fmt: skip
        status.append(cell(self._filter.describe()))
        status.append(".")
        if not page.complete:
            status.append(
                f" Searched back to event {page.searched_from} only "
                "(older ones: pamgate audit export)."
            )
        if trail in self._verifying:
            status.append(" Verifying the chain...")
        elif trail in self._verdicts:
            status.append(" ")
            status.append_text(self._verdicts[trail])
        self.query_one("#status", Static).update(status)

    # -- filter ----------------------------------------------------------------

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "filter":
            return
        try:
            self._filter = parse_filter(event.value)
        except PamgateError as exc:
            self.notify(str(exc), severity="warning", markup=False)
            return
        self.query_one("#status", Static).update("Searching...")
        self.refresh_data()
        self._focus_table()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        event.stop()
        self._show_status()

    # -- actions ---------------------------------------------------------------

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_detail()

    def action_detail(self) -> None:
        """The highlighted event in full: every field and its details as JSON."""
        page = self._pages.get(self.trail)
        key = self.query_one(f"#{self.trail.value}-events", LiveTable).selected_key
        record = next((r for r in page.records if str(r.seq) == key), None) if page else None
        if record is None:
            self.notify("No event is selected.", severity="warning")
            return
        self.app.push_screen(DetailDialog(
            f"{record.trail} trail, event #{record.seq}", event_facts(record)))  # fmt: skip

    def action_leave_filter(self) -> None:
        self._focus_table()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("verify", "switch_trail", "edit_filter", "detail", "leave_filter"):
            # Hidden from the footer and palette of someone who sees the missing-role message.
            return self.console.user is not None and self.allowed
        return True

    def action_verify(self) -> None:
        trail = self.trail
        if trail in self._verifying:
            self.notify(f"The {trail} trail is being verified already.")
            return
        self._verifying.add(trail)
        self._show_status()
        self.notify(f"Verifying the {trail} trail's hash chain...")

        def verified(result: VerifyResult) -> None:
            self._verifying.discard(trail)
            plain = verdict_text(result)
            checked = f" (checked {datetime.now(UTC):%H:%M:%S} UTC)"
            style = "green" if result.ok else "bold red"
            self._verdicts[trail] = Text(plain + checked, style=style)
            self.notify(plain, severity="information" if result.ok else "error",
                        timeout=10, markup=False)  # fmt: skip
            self._show_status()

        def check() -> VerifyResult:
            try:
                return self.actions.verify_trail(trail)
            except PamgateError:
                # run_service shows the error; allow another try.
                self.app.call_from_thread(self._verifying.discard, trail)
                raise

        self.run_service(check, verified)

    def action_switch_trail(self) -> None:
        tabs = self.query_one("#trails", TabbedContent)
        tabs.active = Trail.MACHINE.value if self.trail is Trail.HUMAN else Trail.HUMAN.value
        self._focus_table()

    def action_edit_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def _focus_table(self) -> None:
        self.query_one(f"#{self.trail.value}-events", LiveTable).focus()
