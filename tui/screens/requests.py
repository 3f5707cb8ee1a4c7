"""Requests: pending access requests, live, with approve and deny; recent decisions below."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Label

from gateway.domain.approvals import RequestView
from gateway.domain.breakglass import CaseView
from gateway.domain.operators import SEE_REQUESTS, Role
from gateway.errors import PamgateError
from tui.screens.dialogs import DetailDialog, TextDialog
from tui.screens.section import SectionScreen
from tui.tables import LiveTable, Row
from tui.text import age, cell


def minutes(seconds: int) -> str:
    """A grant's length: ``15 min``, ``2 h``, ``1 h 30 min``."""
    hours, mins = divmod(max(seconds, 0) // 60, 60)
    if not hours:
        return f"{mins} min"
    return f"{hours} h" + (f" {mins} min" if mins else "")


def request_facts(request: RequestView) -> list[tuple[str, object]]:
    """Everything about a request, for its detail view and the decision dialogs."""
    return [
        ("Requester", request.user),
        ("Target", f"{request.account}@{request.target}"),
        ("Grant length if approved", minutes(request.duration_seconds)),
        ("Reason", request.reason),
        ("Rule", request.rule_id),
        ("Approvals", f"{len(request.approvals)} of {request.approvals_required}"
                      + (f" ({', '.join(request.approvals)})" if request.approvals else "")),
        ("Approver groups", ", ".join(request.approver_groups)),
        ("Status", request.status),
        ("Created", f"{request.created_at:%Y-%m-%d %H:%M:%S} UTC"),
        ("Expires", f"{request.expires_at:%Y-%m-%d %H:%M:%S} UTC"),
        ("Decided by", request.decided_by),
        ("Comment", request.comment),
        ("Grant", f"grant:{request.grant_id}" if request.grant_id else None),
    ]  # fmt: skip


#: A request withdrawn this close to a break-glass use of the same access was given up for it.
BREAKGLASS_WINDOW = timedelta(minutes=2)


def breakglass_for(request: RequestView, cases: list[CaseView]) -> CaseView | None:
    """The break-glass case a cancelled request was given up for: pressing ``b`` at the
    waiting prompt withdraws the request and invokes break-glass for the same access."""
    if request.status != "cancelled" or request.decided_at is None:
        return None
    for case in cases:
        same = (case.user, case.target, case.account) == (
            request.user, request.target, request.account)  # fmt: skip
        if same and abs(case.created_at - request.decided_at) <= BREAKGLASS_WINDOW:
            return case
    return None


def decision(request: RequestView, cases: list[CaseView]) -> Text | str:
    """The status column: a request given up for break-glass says so, in red."""
    case = breakglass_for(request, cases)
    if case is None:
        return request.status
    return Text(f"BREAK-GLASS #{case.id}", style="bold red")


class RequestsScreen(SectionScreen):
    """Approvers decide here; auditors and admins can watch."""

    view_roles = SEE_REQUESTS
    purpose = "see access requests"
    AUTO_FOCUS = "#pending"
    BINDINGS = [
        Binding("a", "approve", "Approve"),
        Binding("d", "deny", "Deny"),
        Binding("enter", "detail", "Detail", key_display="⏎"),
        Binding("slash", "filter_list", "Filter", key_display="/"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._pending: dict[str, RequestView] = {}
        self._recent: dict[str, RequestView] = {}

    def compose_section(self) -> ComposeResult:
        yield Label("Pending requests", classes="section-title")
        yield LiveTable(("#", 3), ("Requester", 10), ("Target", 12), ("Reason", 16), ("Age", 4),
                        ("Approvals", 9), ("By", 10), id="pending")  # fmt: skip
        yield Label("", id="request-detail", markup=False)
        yield Label("Recent decisions", classes="section-title")
        yield LiveTable(("#", 3), ("Requester", 10), ("Target", 12), ("Status", 14),
                        ("Decided by", 8), ("When", 8), ("Comment", 9), id="recent",
                        zebra=False)  # fmt: skip

    def load(self) -> tuple[list[RequestView], list[RequestView], list[CaseView]]:
        actions = self.actions
        return actions.pending_requests(), actions.recent_decisions(), actions.breakglass_cases()

    def show(self, data: object) -> None:
        loaded: tuple[list[RequestView], list[RequestView], list[CaseView]] = data  # type: ignore[assignment]
        pending, recent, cases = loaded
        now = self.console.now()
        rows: list[Row] = []
        for request in pending:
            mine = " (yours)" if request.user == self.user.name else ""
            rows.append((str(request.id), (
                str(request.id), cell(request.user + mine),
                cell(f"{request.account}@{request.target}"), cell(request.reason, 40),
                age(request.created_at, now),
                f"{len(request.approvals)}/{request.approvals_required}",
                cell(", ".join(request.approver_groups)),
            )))  # fmt: skip
        self._pending = {str(request.id): request for request in pending}
        self.query_one("#pending", LiveTable).refill(rows)
        self._show_detail()
        self._recent = {str(request.id): request for request in recent}
        self.query_one("#recent", LiveTable).refill([(str(request.id), (
            str(request.id), cell(request.user), cell(f"{request.account}@{request.target}"),
            decision(request, cases), cell(request.decided_by or "-"),
            age(request.decided_at or request.expires_at, now) + " ago",
            cell(request.comment or "", 30),
        )) for request in recent])  # fmt: skip

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "pending":
            self._show_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_detail()

    def _show_detail(self) -> None:
        """The highlighted request in one line under the table (Enter shows all of it)."""
        key = self.query_one("#pending", LiveTable).selected_key
        request = self._pending.get(key) if key is not None else None
        detail = "" if request is None else (
            f"#{request.id} {request.user} wants {request.account}@{request.target} for "
            f"{minutes(request.duration_seconds)}: {request.reason}"
        )  # fmt: skip
        self.query_one("#request-detail", Label).update(cell(detail, 400))

    def action_detail(self) -> None:
        """Everything about the highlighted request (of whichever table has the focus)."""
        if not self.allowed:
            return
        recent = self.focused is self.query_one("#recent", LiveTable)
        table = self.query_one("#recent" if recent else "#pending", LiveTable)
        key = table.selected_key
        request = (self._recent if recent else self._pending).get(key or "")
        if request is None:
            self.notify("No request is selected.", severity="warning")
            return
        self.app.push_screen(DetailDialog(f"Request #{request.id}", request_facts(request)))

    def _selected(self) -> RequestView | None:
        key = self.query_one("#pending", LiveTable).selected_key
        if key is None:
            self.notify("No pending request is selected.", severity="warning")
            return None
        try:
            return self.actions.request(int(key))
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
        if request.status != "pending":
            self.notify(f"Request #{request.id} is {request.status} already.", severity="warning")
            return None
        return request

    def action_approve(self) -> None:
        self._decide(
            "approve",
            lambda request: (
                f"Approve request #{request.id} by {request.user} for "
                f"{request.account}@{request.target} ({minutes(request.duration_seconds)})?"
            ),
            placeholder="comment (optional)",
            required=False,
        )

    def action_deny(self) -> None:
        self._decide(
            "deny",
            lambda request: f"Deny request #{request.id} by {request.user}?",
            placeholder="reason for them (required)",
            required=True,
        )

    def _decide(
        self, verb: str, question: Callable[[RequestView], str], *, placeholder: str,
        required: bool,
    ) -> None:  # fmt: skip
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

        facts = [("Reason", request.reason),
                 ("Grant length", minutes(request.duration_seconds)),
                 ("Approvals so far", f"{len(request.approvals)} of {request.approvals_required}")]
        self.app.push_screen(
            TextDialog(question(request), placeholder=placeholder, required=required, facts=facts),
            decided,
        )  # fmt: skip
