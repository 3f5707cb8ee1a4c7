"""Sessions: live sessions of both lanes, on every node; watch, terminate, revoke the grant."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label

from gateway.domain.operators import SEE_SESSIONS, Role
from gateway.domain.sessions import LiveSession
from gateway.errors import PamgateError
from recordings.asciicast import read_header
from recordings.player import events_from
from recordings.terminal import TerminalModel, parse_size
from tui.screens.dialogs import DetailDialog, TextDialog
from tui.screens.replay import NO_PTY_KINDS
from tui.screens.section import SectionScreen, console_of, deliver
from tui.tables import LiveTable
from tui.text import age, cell
from tui.widgets import TitleBar

#: Seconds between reads of a watched session's recording (it is flushed every 0.25 s).
WATCH_POLL_SECONDS = 0.25
#: Seconds between checks of whether a watched session is still live.
WATCH_STATUS_SECONDS = 1.0


def session_facts(session: LiveSession) -> list[tuple[str, object]]:
    """Everything about a session, for its detail view."""
    return [
        ("Session", session.id), ("Lane", session.lane), ("User", session.user),
        ("Target", f"{session.account}@{session.target}"), ("Source", session.source),
        ("Node", session.node), ("Kind", session.kind), ("Command", session.command),
        ("Authority", session.authority), ("Status", session.status),
        ("Started", f"{session.started_at:%Y-%m-%d %H:%M:%S} UTC"),
    ]  # fmt: skip


class SessionsScreen(SectionScreen):
    """Live sessions, human (H) and machine (M), updated each second."""

    view_roles = SEE_SESSIONS
    purpose = "see live sessions"
    AUTO_FOCUS = "#live"
    BINDINGS = [
        Binding("w", "watch", "Watch"),
        Binding("t", "terminate", "Terminate"),
        Binding("g", "revoke", "Revoke grant"),
        Binding("enter", "detail", "Detail", key_display="⏎"),
        Binding("slash", "filter_list", "Filter", key_display="/"),
    ]

    def compose_section(self) -> ComposeResult:
        yield Label("Live sessions (H human lane, M machine lane)", classes="section-title")
        yield LiveTable(("", 1), ("Who", 10), ("Where", 14), ("Node", 8), ("Kind", 5),
                        ("Age", 4), ("Authority", 10), ("Command", 10), id="live")  # fmt: skip

    def load(self) -> list[LiveSession]:
        return self.actions.live_sessions()

    def show(self, data: object) -> None:
        sessions: list[LiveSession] = data  # type: ignore[assignment]
        now = self.console.now()
        self.query_one("#live", LiveTable).refill([(session.id, (
            "M" if session.lane == "machine" else "H", cell(session.user, 20),
            cell(f"{session.account}@{session.target}", 24), cell(session.node, 12),
            session.kind, age(session.started_at, now), cell(session.authority, 24),
            cell(session.command or "", 30),
        )) for session in sessions])  # fmt: skip

    def _selected(self) -> LiveSession | None:
        key = self.query_one("#live", LiveTable).selected_key if self.allowed else None
        if key is None:
            self.notify("No live session is selected.", severity="warning")
            return None
        try:
            return self.actions.session(key)
        except PamgateError as exc:
            self.notify(str(exc), severity="error")
            return None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_detail()

    def action_detail(self) -> None:
        session = self._selected()
        if session is not None:
            self.app.push_screen(DetailDialog(f"Session {session.id[:12]}", session_facts(session)))

    def action_watch(self) -> None:
        session = self._selected()
        if session is not None:
            self.app.push_screen(WatchScreen(session))

    def action_terminate(self) -> None:
        if not self.can(Role.ADMIN, "terminate sessions"):
            return
        session = self._selected()
        if session is None:
            return

        def confirmed(reason: str | None) -> None:
            if reason:
                self.run_service(
                    lambda: self.actions.terminate_session(session.id, reason),
                    lambda _: self.notify(f"Session of {session.user} ends within 2 seconds."),
                )

        self.app.push_screen(
            TextDialog(f"Terminate {session.user}'s session on {session.account}@{session.target}? "
                       "Reason (the user sees it):", required=True),
            confirmed,
        )  # fmt: skip

    def action_revoke(self) -> None:
        if not self.can(Role.ADMIN, "revoke grants"):
            return
        session = self._selected()
        if session is None:
            return
        grant_id = self._grant_behind(session)
        if grant_id is None:
            self.notify(
                f"This session runs under {session.authority}, not a grant: terminate it "
                "instead, or change the policy.",
                severity="warning",
            )
            return

        def confirmed(reason: str | None) -> None:
            if reason:
                self.run_service(
                    lambda: self.actions.revoke_grant(grant_id, reason),
                    lambda _: self.notify(f"Grant #{grant_id} revoked; its sessions end."),
                )

        self.app.push_screen(
            TextDialog(f"Revoke grant #{grant_id} (all its sessions end)? Reason:", required=True),
            confirmed,
        )

    def _grant_behind(self, session: LiveSession) -> int | None:
        try:
            return self.actions.grant_behind(session.authority)
        except PamgateError:
            return None


class WatchScreen(Screen[None]):
    """A read-only view of a live session, drawn from its recording as it grows.

    The recording goes through the terminal emulator into the widget, so
    nothing the session prints can reach the watcher's terminal. Opening it
    is an audit event (``recording.watched``).
    """

    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back")]

    def __init__(self, session: LiveSession) -> None:
        super().__init__()
        self._session = session
        self._path: Path | None = None
        self._offset = 0
        self._terminal: TerminalModel | None = None
        self._ended_as: str | None = None

    def compose(self) -> ComposeResult:
        from tui.widgets import TerminalView

        yield TitleBar()
        session = self._session
        yield Label(
            cell(f"Watching {session.user} on {session.account}@{session.target} "
                 f"({session.id[:12]}), read-only"),
            id="watch-title", classes="section-title",
        )  # fmt: skip
        yield TerminalView(id="watch-view")
        yield Label("", id="watch-status")
        yield Footer()

    def on_mount(self) -> None:
        self._open()
        self.set_interval(WATCH_STATUS_SECONDS, self._check_status)

    @property
    def ended(self) -> bool:
        """True once the watched session is over (the view stays, marked as ended)."""
        return self._ended_as is not None

    def _check_status(self) -> None:
        if self._ended_as is None:
            self._read_status()

    @work(thread=True, exclusive=True, group="status")
    def _read_status(self) -> None:
        actions = console_of(self).actions
        if actions is None:
            return
        try:
            session = actions.session(self._session.id)
        except PamgateError:
            return  # the next check tries again; the recording goes on being followed
        if session.status != "live":
            deliver(self, self._ended, session.status)

    @work(thread=True, exclusive=True)
    def _open(self) -> None:
        actions = console_of(self).actions
        assert actions is not None, "watching starts only when signed in"
        try:
            info = actions.open_recording(self._session.id, purpose="watched")
            assert info.path is not None
            header = read_header(info.path)
            with info.path.open("rb") as recording:
                self._offset = len(recording.readline())  # events start after the header
        except (PamgateError, OSError) as exc:
            self.app.call_from_thread(self.notify, f"Cannot watch: {exc}", severity="error")
            return
        self._path = info.path
        self._terminal = TerminalModel(
            int(header.get("width", 80)), int(header.get("height", 24)),
            newline_returns=self._session.kind in NO_PTY_KINDS,
        )  # fmt: skip
        self.app.call_from_thread(self.set_interval, WATCH_POLL_SECONDS, self._follow)

    def _follow(self) -> None:
        self._read_more()

    @work(thread=True, exclusive=True, group="follow")
    def _read_more(self) -> None:
        if self._path is None or self._terminal is None:
            return
        changed = False
        try:
            for _, code, data, offset in events_from(self._path, self._offset):
                if code == "o":
                    self._terminal.feed(data)
                    changed = True
                elif code == "r" and (size := parse_size(data)):
                    self._terminal.resize(*size)
                    changed = True
                self._offset = offset
        except OSError:
            # Sealing may compress and replace the file: the session has ended.
            deliver(self, self._ended, "ended")
            return
        if changed:
            deliver(self, self._draw)

    def _draw(self) -> None:
        from tui.widgets import TerminalView

        if self._terminal is not None:
            self.query_one("#watch-view", TerminalView).update_screen(self._terminal.screen)

    def _ended(self, status: str) -> None:
        if self._ended_as is not None:
            return
        self._ended_as = status
        self.notify(f"The watched session of {self._session.user} has ended ({status}).")
        self.query_one("#watch-status", Label).update(Text(
            f"The session has ended ({status}). What it showed last stays on screen; "
            "Esc goes back.", style="bold"))  # fmt: skip
