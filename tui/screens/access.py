"""Access: who can reach what now, through what, and when each path was last used; below it,
what is stale or too broad. Read-only (campaigns are decided with ``review decide``)."""

from __future__ import annotations

from datetime import datetime

from rich.console import RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Label

from gateway.domain.entitlements.effective import AccessPath
from gateway.domain.entitlements.stale import Finding
from gateway.domain.operators import READ_TRAILS
from tui.screens.section import SectionScreen, add_columns
from tui.text import age, cell

#: The report asks the access decision for every person and target account: not every second.
REFRESH_SECONDS = 30.0


class AccessScreen(SectionScreen):
    """The entitlement report and its stale and excessive findings."""

    view_roles = READ_TRAILS
    purpose = "read the access report"
    BINDINGS = [Binding("r", "reload", "Reload")]

    def compose_section(self) -> ComposeResult:
        yield Label("Who can reach what now, through what; last use from the session records",
                    classes="section-title")  # fmt: skip
        paths: DataTable[RenderableType] = DataTable(id="paths", cursor_type="row",
                                                     zebra_stripes=True)  # fmt: skip
        add_columns(paths, (("Identity", 12), ("Access", 16), ("Via", 10), ("Authority", 18),
                            ("Last use", 10), ("Limits", 22)))  # fmt: skip
        yield paths
        yield Label("Stale and too broad (30 days)", classes="section-title")
        findings: DataTable[RenderableType] = DataTable(id="findings", cursor_type="row")
        add_columns(findings, (("Kind", 12), ("Identity", 12), ("Item", 20), ("Detail", 40)))
        yield findings

    def on_mount(self) -> None:
        if self.allowed:
            self.refresh_data()
            self.set_interval(REFRESH_SECONDS, self.refresh_data)

    def action_reload(self) -> None:
        if self.allowed:
            self.refresh_data()

    def load(self) -> tuple[list[AccessPath], list[Finding]]:
        days = self.console.services.config.reviews.stale_after_days
        return self.actions.access_report(), self.actions.stale_access(days)

    def show(self, data: object) -> None:
        found: tuple[list[AccessPath], list[Finding]] = data  # type: ignore[assignment]
        paths, findings = found
        now = self.console.now()
        table = self.query_one("#paths", DataTable)
        table.clear()
        for path in paths:
            who = f"{'M' if path.identity_type == 'machine' else 'H'} {path.identity}"
            used = _used(path.last_used, now)
            limits = ", ".join(path.limits.get("commands", [])) or str(
                path.limits.get("file_transfer", ""))  # fmt: skip
            table.add_row(cell(who, 24), cell(f"{path.account}@{path.target}", 30),
                          path.via, cell(path.authority, 30), used, cell(limits, 40))  # fmt: skip
        stale = self.query_one("#findings", DataTable)
        stale.clear()
        for finding in findings:
            kind = Text(finding.kind, style="bold red" if finding.excessive else "yellow")
            stale.add_row(kind, cell(finding.identity, 24), cell(finding.item, 40),
                          cell(finding.detail, 80))  # fmt: skip


def _used(last: datetime | None, now: datetime) -> Text:
    if last is None:
        return Text("never", style="yellow")
    return Text(age(last, now) + " ago")
