"""The console's Access section (key 7), driven through Textual's Pilot at 80x24: the
entitlement report and its stale and too-broad findings, for auditors and admins only."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from gateway.domain.machines.registry import ScopeTarget
from gateway.services import GatewayServices
from tests.support.console import add_person, console_services, sign_in, wait_for
from tui.app import PamgateConsole
from tui.screens.access import AccessScreen

SIZE = (80, 24)


@pytest.fixture
def services(tmp_path: Path) -> GatewayServices:
    return console_services(tmp_path)


def cells(table: DataTable, column: int) -> list[str]:
    return [str(table.get_row_at(row)[column]) for row in range(table.row_count)]


async def test_the_access_section_shows_paths_and_what_is_too_broad(
    services: GatewayServices,
) -> None:
    auditor = add_person(services, "alice", "auditors")
    add_person(services, "bob", "ops")
    services.machines.add(
        "backup-bot", actor="tests", kind="service-account", owner="o", tech_owner="t",
        purpose="p", targets=[ScopeTarget("web01", "root")], commands=["re:.*"],
    )  # fmt: skip
    app = PamgateConsole(services)
    async with app.run_test(size=SIZE) as pilot:
        await sign_in(pilot, auditor)
        await pilot.press("7")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, AccessScreen))
        paths = pilot.app.screen.query_one("#paths", DataTable)
        await wait_for(pilot, lambda: paths.row_count >= 2)
        assert "H bob" in cells(paths, 0) and "M backup-bot" in cells(paths, 0)
        via = dict(zip(cells(paths, 0), cells(paths, 2), strict=True))
        assert via["H bob"] == "approval" and via["M backup-bot"] == "nhi-scope"
        findings = pilot.app.screen.query_one("#findings", DataTable)
        await wait_for(pilot, lambda: findings.row_count > 0)
        broad = [row for row in range(findings.row_count)
                 if str(findings.get_row_at(row)[0]) == "nhi-broad"]  # fmt: skip
        assert {str(findings.get_row_at(row)[2]) for row in broad} == {"re:.*", "sources"}


async def test_the_access_section_needs_the_auditor_or_admin_role(
    services: GatewayServices,
) -> None:
    approver = add_person(services, "carol", "approvers")
    app = PamgateConsole(services)
    async with app.run_test(size=SIZE) as pilot:
        await sign_in(pilot, approver)
        await pilot.press("7")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, AccessScreen))
        message = str(pilot.app.screen.query_one(".missing-role", Static).render())
        assert "You need the admin or auditor role to read the access report" in message
