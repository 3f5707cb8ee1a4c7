"""Access: who can reach what now, through what, and when each path was last used; below it,
what is stale or too broad. Read-only (campaigns are decided with ``review decide``)."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Label

from gateway.domain.entitlements.effective import AccessPath
from gateway.domain.entitlements.stale import Finding
from gateway.domain.operators import READ_TRAILS
from tui.screens.section import SectionScreen
from tui.tables import LiveTable, Row
from tui.text import age, cell

#: The report asks the access decision for every person and target account: not every second.
REFRESH_SECONDS = 30.0


class AccessScreen(SectionScreen):
    """The entitlement report and its stale and excessive findings."""

    view_roles = READ_TRAILS
    purpose = "read the access report"
    BINDINGS = [Binding("u", "reload", "Update")]

    def compose_section(self) -> ComposeResult:
        yield Label("Who can reach what now, through what; last use from the session records",
                    classes="section-title")  # fmt: skip
        yield LiveTable(("Identity", 12), ("Access", 16), ("Via", 10), ("Authority", 18),
                        ("Last use", 10), ("Limits", 22), id="paths")  # fmt: skip
        yield Label("Stale and too broad (30 days)", classes="section-title")
        yield LiveTable(("Kind", 12), ("Identity", 12), ("Item", 20), ("Detail", 40),
                        id="findings", zebra=False)  # fmt: skip

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
        rows: list[Row] = []
        for number, path in enumerate(paths):
            who = f"{'M' if path.identity_type == 'machine' else 'H'} {path.identity}"
            used = _used(path.last_used, now)
            limits = ", ".join(path.limits.get("commands", [])) or str(
                path.limits.get("file_transfer", ""))  # fmt: skip
            # Keys need only be unique: the screen is read-only (nothing acts on a selection).
            rows.append((str(number), (
                cell(who, 24), cell(f"{path.account}@{path.target}", 30), path.via,
                cell(path.authority, 30), used, cell(limits, 40),
            )))  # fmt: skip
        self.query_one("#paths", LiveTable).refill(rows)
        found_rows: list[Row] = []
        for number, finding in enumerate(findings):
            kind = Text(finding.kind, style="bold red" if finding.excessive else "yellow")
            found_rows.append((str(number), (
                kind, cell(finding.identity, 24), cell(finding.item, 40), cell(finding.detail, 80),
            )))  # fmt: skip
        self.query_one("#findings", LiveTable).refill(found_rows)


def _used(last: datetime | None, now: datetime) -> Text:
    if last is None:
        return Text("never", style="yellow")
    return Text(age(last, now) + " ago")
