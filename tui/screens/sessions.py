"""Sessions: live sessions of both lanes, on every node; watch, terminate, revoke the grant."""

from __future__ import annotations

from pathlib import Path

from rich.console import RenderableType
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.coordinate import Coordinate
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label

from gateway.domain.operators import SEE_SESSIONS, Role
from gateway.domain.sessions import LiveSession
from gateway.errors import PamgateError
from recordings.asciicast import read_header
from recordings.player import events_from
from recordings.terminal import TerminalModel, parse_size
from tui.screens.dialogs import TextDialog
from tui.screens.section import SectionScreen, add_columns, console_of, deliver
from tui.text import age, cell

#: Seconds between reads of a watched session's recording (it is flushed every 0.25 s).
WATCH_POLL_SECONDS = 0.25


class SessionsScreen(SectionScreen):
    """Live sessions, human (H) and machine (M), updated each second."""

    view_roles = SEE_SESSIONS
    purpose = "see live sessions"
    BINDINGS = [
        Binding("w", "watch", "Watch"),
        Binding("t", "terminate", "Terminate"),
        Binding("g", "revoke_grant", "Revoke grant"),
    ]

    def compose_section(self) -> ComposeResult:
        yield Label("Live sessions (H human lane, M machine lane)", classes="section-title")
        table: DataTable[RenderableType] = DataTable(
            id="live", cursor_type="row", zebra_stripes=True
        )
        add_columns(table, (("", 1), ("Who", 10), ("Where", 14), ("Node", 8), ("Kind", 5),
                            ("Age", 4), ("Authority", 10), ("Command", 10)))  # fmt: skip
        yield table

    def load(self) -> list[LiveSession]:
        return self.actions.live_sessions()

    def show(self, data: object) -> None:
        sessions: list[LiveSession] = data  # type: ignore[assignment]
        now = self.console.now()
        table = self.query_one("#live", DataTable)
        keep = table.cursor_row
        table.clear()
        for session in sessions:
            table.add_row(
                "M" if session.lane == "machine" else "H", cell(session.user, 20),
                cell(f"{session.account}@{session.target}", 24), cell(session.node, 12),
                session.kind, age(session.started_at, now), cell(session.authority, 24),
                cell(session.command or "", 30), key=session.id,
            )  # fmt: skip
        if sessions:
            table.move_cursor(row=min(keep, len(sessions) - 1))

    def _selected(self) -> LiveSession | None:
        table = self.query_one("#live", DataTable)
        if not self.allowed or table.row_count == 0:
            self.notify("No live session is selected.", severity="warning")
            return None
        key = table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key.value
        try:
            return self.actions.session(str(key))
        except PamgateError as exc:
            self.notify(str(exc), severity="error")
            return None

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

    def action_revoke_grant(self) -> None:
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

    def compose(self) -> ComposeResult:
        from tui.widgets import TerminalView

        yield Header()
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
        self._terminal = TerminalModel(int(header.get("width", 80)), int(header.get("height", 24)))
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
            deliver(self, self._ended)
            return
        if changed:
            deliver(self, self._draw)

    def _draw(self) -> None:
        from tui.widgets import TerminalView

        if self._terminal is not None:
            self.query_one("#watch-view", TerminalView).update_screen(self._terminal.screen)

    def _ended(self) -> None:
        self.query_one("#watch-status", Label).update("The session has ended.")
