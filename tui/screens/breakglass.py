"""Break-glass: the review queue (unreviewed first, overdue highlighted), recordings, verdicts."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Label

from gateway.domain.breakglass import CaseView
from gateway.domain.operators import SEE_BREAKGLASS
from gateway.errors import PamgateError
from tui.screens.dialogs import DetailDialog, VerdictDialog
from tui.screens.section import SectionScreen
from tui.tables import LiveTable, Row
from tui.text import age, cell


def case_facts(case: CaseView) -> list[tuple[str, object]]:
    """Everything about a break-glass case, for its detail view."""
    return [
        ("User", case.user), ("Target", f"{case.account}@{case.target}"),
        ("Justification", case.justification), ("Grant", f"grant:{case.grant_id}"),
        ("Authority of its sessions", case.authority),
        ("Used", f"{case.created_at:%Y-%m-%d %H:%M:%S} UTC"),
        ("Review due", f"{case.review_due_at:%Y-%m-%d %H:%M:%S} UTC"),
        ("Verdict", case.verdict or "not reviewed yet"), ("Reviewed by", case.reviewed_by),
        ("Reviewer's note", case.note),
    ]  # fmt: skip


class BreakGlassScreen(SectionScreen):
    """Reviewers open each emergency session and record whether it was justified."""

    view_roles = SEE_BREAKGLASS
    purpose = "see break-glass cases"
    AUTO_FOCUS = "#cases"
    BINDINGS = [
        Binding("o", "open_recording", "Open recording"),
        Binding("v", "verdict", "Verdict"),
        Binding("enter", "detail", "Detail", key_display="⏎"),
        Binding("slash", "filter_list", "Filter", key_display="/"),
    ]

    def compose_section(self) -> ComposeResult:
        yield Label("Break-glass cases: unreviewed first; OVERDUE past the review deadline",
                    classes="section-title")  # fmt: skip
        yield LiveTable(("#", 3), ("User", 9), ("Where", 12), ("When", 8), ("Review", 14),
                        ("Justification", 20), id="cases")  # fmt: skip
        yield Label("", id="case-detail")

    def load(self) -> list[CaseView]:
        return self.actions.breakglass_cases()

    def show(self, data: object) -> None:
        cases: list[CaseView] = data  # type: ignore[assignment]
        now = self.console.now()
        rows: list[Row] = []
        for case in cases:
            if case.verdict is not None:
                review = Text(f"{case.verdict} ({case.reviewed_by})")
            elif case.overdue(now):
                review = Text(f"OVERDUE {age(case.review_due_at, now)}", style="bold red")
            else:
                review = Text(f"due in {age(now, case.review_due_at)}", style="yellow")
            rows.append((str(case.id), (
                str(case.id), cell(case.user, 16), cell(f"{case.account}@{case.target}", 24),
                age(case.created_at, now) + " ago", review, cell(case.justification, 40),
            )))  # fmt: skip
        self.query_one("#cases", LiveTable).refill(rows)

    def _selected(self) -> CaseView | None:
        key = self.query_one("#cases", LiveTable).selected_key if self.allowed else None
        if key is None:
            self.notify("No break-glass case is selected.", severity="warning")
            return None
        try:
            return self.actions.breakglass_case(int(key))
        except PamgateError as exc:
            self.notify(str(exc), severity="error")
            return None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_detail()

    def action_detail(self) -> None:
        case = self._selected()
        if case is not None:
            self.app.push_screen(DetailDialog(f"Break-glass case #{case.id}", case_facts(case)))

    def action_open_recording(self) -> None:
        from tui.screens.replay import ReplayScreen

        case = self._selected()
        if case is None:
            return
        try:
            sessions = [s for s in self.actions.sessions_under(case.authority) if s.recording_path]
        except PamgateError as exc:
            self.notify(str(exc), severity="error")
            return
        if not sessions:
            self.notify(f"No recorded session ran under break-glass case #{case.id}.")
            return
        if len(sessions) > 1:
            self.notify(f"Case #{case.id} has {len(sessions)} sessions; opening the first. "
                        "The others are in Recordings.")  # fmt: skip
        self.app.push_screen(ReplayScreen(sessions[0].id))

    def action_verdict(self) -> None:
        case = self._selected()
        if case is None:
            return
        if case.user == self.user.name:
            self.notify("You cannot review your own break-glass use: someone else must.",
                        severity="warning")  # fmt: skip
            return
        if case.verdict is not None:
            self.notify(f"Case #{case.id} was reviewed already by {case.reviewed_by}.")
            return

        def recorded(answer: tuple[str, str] | None) -> None:
            if answer is not None:
                verdict, note = answer
                self.run_service(
                    lambda: self.actions.review_breakglass(case.id, verdict, note),
                    lambda view: self.notify(f"Case #{view.id} recorded as {view.verdict}."),
                )

        self.app.push_screen(
            VerdictDialog(f"Verdict on break-glass case #{case.id} ({case.user} on "
                          f"{case.account}@{case.target})"),
            recorded,
        )  # fmt: skip
