"""Requests: pending access requests, live, with approve and deny; recent decisions below."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import RenderableType
from textual.app import ComposeResult
from textual.binding import Binding
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Label

from gateway.domain.approvals import RequestView
from gateway.domain.operators import SEE_REQUESTS, Role
from gateway.errors import PamgateError
from tui.screens.dialogs import TextDialog
from tui.screens.section import SectionScreen, add_columns
from tui.text import age, cell


class RequestsScreen(SectionScreen):
    """Approvers decide here; auditors and admins can watch."""

    view_roles = SEE_REQUESTS
    purpose = "see access requests"
    BINDINGS = [
        Binding("a", "approve", "Approve"),
        Binding("d", "deny", "Deny"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._pending: dict[str, RequestView] = {}

    def compose_section(self) -> ComposeResult:
        yield Label("Pending requests", classes="section-title")
        pending: DataTable[RenderableType] = DataTable(
            id="pending", cursor_type="row", zebra_stripes=True
        )
        add_columns(pending, (("#", 3), ("Requester", 10), ("Target", 12), ("Reason", 16),
                              ("Age", 4), ("Approvals", 9), ("By", 10)))  # fmt: skip
        yield pending
        yield Label("", id="request-detail", markup=False)
        yield Label("Recent decisions", classes="section-title")
        recent: DataTable[RenderableType] = DataTable(id="recent", cursor_type="row")
        add_columns(recent, (("#", 3), ("Requester", 10), ("Target", 12), ("Status", 9),
                             ("Decided by", 10), ("When", 8), ("Comment", 12)))  # fmt: skip
        yield recent

    def load(self) -> tuple[list[RequestView], list[RequestView]]:
        return self.actions.pending_requests(), self.actions.recent_decisions()

    def show(self, data: object) -> None:
        loaded: tuple[list[RequestView], list[RequestView]] = data  # type: ignore[assignment]
        pending, recent = loaded
        now = self.console.now()
        table = self.query_one("#pending", DataTable)
        keep = table.cursor_row
        table.clear()
        for request in pending:
            mine = " (yours)" if request.user == self.user.name else ""
            where = cell(f"{request.account}@{request.target}")
            table.add_row(
                str(request.id), cell(request.user + mine), where, cell(request.reason, 40),
                age(request.created_at, now),
                f"{len(request.approvals)}/{request.approvals_required}",
                cell(", ".join(request.approver_groups)), key=str(request.id),
            )  # fmt: skip
        self._pending = {str(request.id): request for request in pending}
        if pending:
            table.move_cursor(row=min(keep, len(pending) - 1))
        self._show_detail()
        decided = self.query_one("#recent", DataTable)
        decided.clear()
        for request in recent:
            when = request.decided_at or request.expires_at
            decided.add_row(
                str(request.id), cell(request.user), cell(f"{request.account}@{request.target}"),
                request.status, cell(request.decided_by or "-"), age(when, now) + " ago",
                cell(request.comment or "", 30),
            )  # fmt: skip

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "pending":
            self._show_detail()

    def _show_detail(self) -> None:
        """The highlighted request in full: the table cuts the reason short."""
        table = self.query_one("#pending", DataTable)
        request = None
        if table.row_count:
            key = table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key.value
            request = self._pending.get(str(key))
        detail = "" if request is None else (
            f"#{request.id} {request.user} wants {request.account}@{request.target} for "
            f"{request.duration_seconds // 60} min: {request.reason}"
        )  # fmt: skip
        self.query_one("#request-detail", Label).update(cell(detail, 400))

    def _selected(self) -> RequestView | None:
        table = self.query_one("#pending", DataTable)
        if table.row_count == 0:
            self.notify("No pending request is selected.", severity="warning")
            return None
        request_id = int(str(table.get_row_at(table.cursor_row)[0]))
        try:
            return self.actions.request(request_id)
        except PamgateError as exc:
            self.notify(str(exc), severity="error")
            return None

    def _decidable(self, verb: str) -> RequestView | None:
        if not self.allowed or not self.can(Role.APPROVER, f"{verb} requests"):
            return None
        request = self._selected()
        if request is None:
            return None
        if request.user == self.user.name:
            self.notify(
                f"Request #{request.id} is your own: someone else must decide it "
                "(separation of duties).",
                severity="warning",
            )
            return None
        return request

    def action_approve(self) -> None:
        self._decide(
            "approve",
            lambda request: (
                f"Approve request #{request.id} by {request.user} for "
                f"{request.account}@{request.target}? Comment (optional):"
            ),
            required=False,
        )

    def action_deny(self) -> None:
        self._decide(
            "deny",
            lambda request: f"Deny request #{request.id} by {request.user}: reason for them",
            required=True,
        )

    def _decide(self, verb: str, question: Callable[[RequestView], str], *, required: bool) -> None:
        """Ask for the comment, then approve or deny the selected request with it."""
        request = self._decidable(verb)
        if request is None:
            return
        decide = self.actions.approve if verb == "approve" else self.actions.deny

        def decided(comment: str | None) -> None:
            if comment is not None:
                self.run_service(
                    lambda: decide(request.id, comment),
                    lambda view: self.notify(f"Request #{view.id}: {view.status}."),
                )

        self.app.push_screen(TextDialog(question(request), required=required), decided)
