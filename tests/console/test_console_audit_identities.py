"""The console's Audit and Identities sections, driven through Textual's Pilot at 80x24.

No gateway process and no SSH: the console works on the services over a fresh
data directory, and the tests check the outcome through the same services.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from textual.pilot import Pilot
from textual.widgets import Input, Static, TabbedContent

from gateway.domain.audit.trail import AuditLog, AuditRecord, Trail
from gateway.domain.machines.registry import ScopeTarget
from gateway.errors import PamgateError
from gateway.services import GatewayServices
from tests.support.console import Person, add_person, console_services, sign_in, wait_for
from tui.app import PamgateConsole
from tui.screens import audit as audit_screen
from tui.screens.audit import (
    AuditFilter,
    AuditScreen,
    LiveTable,
    TrailWindow,
    parse_filter,
)
from tui.screens.dialogs import TextDialog
from tui.screens.identities import EnrolmentDialog, IdentitiesScreen, review_cell

SIZE = (80, 24)


@pytest.fixture
def services(tmp_path: Path) -> GatewayServices:
    return console_services(tmp_path)


def add_machine(services: GatewayServices, name: str) -> None:
    services.machines.add(
        name, actor="tests", kind="service-account", owner="o", tech_owner="t", purpose="p",
        targets=[ScopeTarget("web01", "root")], commands=["uptime"],
    )  # fmt: skip


def column(table: LiveTable, index: int) -> list[str]:
    """The plain text of one column, top to bottom."""
    return [str(table.get_row_at(row)[index]) for row in range(table.row_count)]


def noticed(app: PamgateConsole, text: str) -> bool:
    """True if a notification on screen now contains ``text``."""
    return any(text in notification.message for notification in app._notifications)


async def open_section(pilot: Pilot, person: Person, key: str, screen: type) -> None:
    """Sign in as ``person`` and switch to a section with its number key."""
    await sign_in(pilot, person)
    assert pilot.app.user is not None, "sign-in failed"
    await pilot.press(key)
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, screen))


async def answer(pilot: Pilot, reply: str) -> None:
    """Answer the question dialog that is opening with ``reply``; wait until it is taken."""
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, TextDialog))
    dialog = pilot.app.screen
    dialog.query_one("#text", Input).value = reply  # set, not typed: keys are slow
    problem = dialog.query_one("#problem", Static)
    await pilot.press("enter")
    await wait_for(pilot, lambda: pilot.app.screen is not dialog or str(problem.render()))


async def wait_for_rows(pilot: Pilot, table_id: str) -> LiveTable:
    table = pilot.app.screen.query_one(table_id, LiveTable)
    await wait_for(pilot, lambda: table.row_count > 0)
    return table


async def filter_events(pilot: Pilot, query: str) -> None:
    """Replace the filter with ``query`` and submit it."""
    field = pilot.app.screen.query_one("#filter", Input)
    if not field.has_focus:
        await pilot.press("slash")
    field.value = query  # not typed key by key: that is slow, and Input is Textual's
    await pilot.press("enter")
    await pilot.pause()


# -- Audit ---------------------------------------------------------------------


async def test_audit_shows_each_trail_apart_with_authority(services: GatewayServices) -> None:
    auditor = add_person(services, "alice", "auditors")
    add_person(services, "bob", "ops")
    add_machine(services, "backup-bot")
    hostile = "[bold red]spoof[/]\x1b[2J\nforged line"
    services.machines.set_status("backup-bot", "suspended", actor="tests", reason=hostile)
    app = PamgateConsole(services)
    async with app.run_test(size=SIZE) as pilot:
        await open_section(pilot, auditor, "5", AuditScreen)
        human = await wait_for_rows(pilot, "#human-events")
        actions = column(human, 3)
        assert "user.created" in actions
        assert not any(action.startswith("machine.") for action in actions)
        row = column(human, 6).index("user:bob")
        assert column(human, 2)[row] == "tests"
        assert column(human, 7)[row] == "local-admin"
        # Newest first.
        seqs = [int(seq) for seq in column(human, 0)]
        assert seqs == sorted(seqs, reverse=True)

        await pilot.press("right_square_bracket")
        assert app.screen.query_one("#trails", TabbedContent).active == "machine"
        machine = await wait_for_rows(pilot, "#machine-events")
        expected = [r.action for r in services.audit.events(Trail.MACHINE)]
        assert column(machine, 3) == expected[::-1]
        assert column(machine, 3)[:2] == ["machine.suspended", "machine.created"]
        assert column(machine, 6)[0] == "nhi:backup-bot"
        # Untrusted text is shown literally: markup unparsed, controls escaped.
        assert column(machine, 5)[0] == "[bold red]spoof[/]\\x1b[2J\\x0aforged line"
        status = str(app.screen.query_one("#status", Static).render())
        assert status.startswith(f"Machine trail: {len(expected)} of {len(expected)} events shown")


async def test_audit_filters_by_actor_action_and_time(services: GatewayServices) -> None:
    auditor = add_person(services, "alice", "auditors")
    add_person(services, "bob", "ops")
    services.users.set_disabled("bob", True, actor="carol")
    app = PamgateConsole(services)
    async with app.run_test(size=SIZE) as pilot:
        await open_section(pilot, auditor, "5", AuditScreen)
        human = await wait_for_rows(pilot, "#human-events")

        await filter_events(pilot, "actor=carol")
        await wait_for(pilot, lambda: column(human, 2) == ["carol"])
        assert column(human, 3) == ["user.disabled"]

        await filter_events(pilot, "action=user. since=1h")
        await wait_for(pilot, lambda: set(column(human, 3)) == {"user.created", "user.disabled"})

        future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
        await filter_events(pilot, f"since={future}")
        await wait_for(pilot, lambda: human.row_count == 0)

        # A filter that cannot be read is said plainly and the last good one stays.
        await filter_events(pilot, "who=bob")
        await wait_for(pilot, lambda: noticed(app, "cannot read 'who=bob'"))
        assert human.row_count == 0

        await filter_events(pilot, "")
        await wait_for(pilot, lambda: human.row_count >= 4)


async def test_audit_is_live_and_keeps_the_selected_event(services: GatewayServices) -> None:
    auditor = add_person(services, "alice", "auditors")
    add_person(services, "bob", "ops")
    app = PamgateConsole(services)
    async with app.run_test(size=SIZE) as pilot:
        await open_section(pilot, auditor, "5", AuditScreen)
        human = await wait_for_rows(pilot, "#human-events")
        await pilot.press("down", "right", "right")
        selected, row, scrolled = human.selected_key, human.cursor_row, human.scroll_x
        assert scrolled > 0
        before = human.row_count

        services.users.set_disabled("bob", True, actor="carol")
        await wait_for(pilot, lambda: human.row_count == before + 1, timeout=3)
        await pilot.pause()
        assert column(human, 3)[0] == "user.disabled"
        # The same event stays selected (one row lower), and the view does not jump back left.
        assert (human.selected_key, human.cursor_row) == (selected, row + 1)
        assert human.scroll_x == scrolled


async def test_audit_verify_says_ok_then_names_the_broken_event(
    services: GatewayServices,
) -> None:
    auditor = add_person(services, "alice", "auditors")
    app = PamgateConsole(services)
    async with app.run_test(size=SIZE) as pilot:
        await open_section(pilot, auditor, "5", AuditScreen)
        status = app.screen.query_one("#status", Static)
        await wait_for_rows(pilot, "#human-events")

        await pilot.press("V")
        await wait_for(pilot, lambda: "human trail OK" in str(status.render()))
        assert noticed(app, "events verified, the chain is intact")

        with services.store.engine.begin() as connection:
            connection.execute(text("UPDATE audit_human SET reason = 'edited' WHERE seq = 1"))
        await pilot.press("V")
        await wait_for(pilot, lambda: "BROKEN at event 1" in str(status.render()))
        assert noticed(app, "contents do not match its hash")


async def test_audit_needs_the_auditor_or_admin_role(services: GatewayServices) -> None:
    approver = add_person(services, "dave", "approvers")
    app = PamgateConsole(services)
    async with app.run_test(size=SIZE) as pilot:
        await open_section(pilot, approver, "5", AuditScreen)
        message = str(app.screen.query_one(".missing-role", Static).render())
        assert message.startswith("You need the admin or auditor role to see the audit trails.")
        assert not app.screen.query(LiveTable)
        await pilot.press("V")  # offered nothing, and nothing breaks
        assert "V" not in app.screen.active_bindings


def test_filter_parsing() -> None:
    assert parse_filter("actor=bob action=request. since=2h") == AuditFilter(
        "bob", "request.", "2h"
    )
    assert parse_filter("  ") == AuditFilter()
    for bad in ("bob", "since=yesterday", "actor=a actor=b", "action="):
        with pytest.raises(PamgateError):
            parse_filter(bad)


class CountingAudit:
    """An AuditLog that counts the events it hands out."""

    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit
        self.read = 0

    def head(self, trail: Trail) -> tuple[int, str]:
        return self._audit.head(trail)

    def events(self, trail: Trail, **options: object) -> Iterator[AuditRecord]:
        for record in self._audit.events(trail, **options):  # type: ignore[arg-type]
            self.read += 1
            yield record


def test_trail_window_reads_only_new_events_once_filled(services: GatewayServices) -> None:
    for index in range(5):
        add_person(services, f"user{index}")
    audit = CountingAudit(services.audit)
    window = TrailWindow(audit, Trail.HUMAN)  # type: ignore[arg-type]
    query = AuditFilter(action="user.created")
    assert [r.target for r in window.read(query).records][:2] == ["user:user4", "user:user3"]
    services.users.set_disabled("user1", True, actor="tests")
    add_person(services, "late")
    audit.read = 0
    page = window.read(query)
    assert audit.read == 2  # the two new events, not the trail again
    assert [r.target for r in page.records[:2]] == ["user:late", "user:user4"]
    assert len(page.records) == 6 and page.complete


def test_trail_window_says_when_its_search_stopped_short(
    services: GatewayServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_person(services, "early")
    for index in range(4):
        services.users.set_disabled("early", index % 2 == 0, actor="tests")
    monkeypatch.setattr(audit_screen, "SCAN_LIMIT", 3)
    page = TrailWindow(services.audit, Trail.HUMAN).read(AuditFilter(action="user.created"))
    assert page.records == [] and not page.complete
    assert page.searched_from == page.head - 2


# -- Identities ------------------------------------------------------------------


async def test_admin_disables_and_enables_a_user_and_suspends_an_nhi(
    services: GatewayServices,
) -> None:
    admin = add_person(services, "root-admin", "pamgate-admins")
    add_person(services, "zed", "ops")  # second by name: one "down" selects it
    add_machine(services, "backup-bot")
    app = PamgateConsole(services)
    async with app.run_test(size=SIZE) as pilot:
        await open_section(pilot, admin, "6", IdentitiesScreen)
        humans = await wait_for_rows(pilot, "#human-table")
        await pilot.press("down")
        assert humans.selected_key == "zed"

        await pilot.press("x")
        await answer(pilot, "left the team")  # a reason is asked for, and recorded
        await wait_for(pilot, lambda: services.users.get("zed").disabled)
        await wait_for(pilot, lambda: column(humans, 2)[-1] == "disabled")
        await pilot.press("e")
        await answer(pilot, "back from leave")
        await wait_for(pilot, lambda: not services.users.get("zed").disabled)

        await pilot.press("right_square_bracket")
        machines = await wait_for_rows(pilot, "#machine-table")
        assert column(machines, 5) == ["0"]
        assert column(machines, 6) == ["root@web01: uptime"]  # its scope
        await pilot.press("s")
        await answer(pilot, "leaked token")
        await wait_for(pilot, lambda: services.machines.get("backup-bot").status == "suspended")
        await wait_for(pilot, lambda: column(machines, 2) == ["suspended"])

    human = [(r.action, r.actor, r.authority) for r in services.audit.events(Trail.HUMAN)]
    assert ("user.disabled", "root-admin", "role:admin") in human
    reasons = {r.action: r.reason for r in services.audit.events(Trail.HUMAN)}
    assert reasons["user.disabled"] == "left the team"
    assert ("user.enabled", "root-admin", "role:admin") in human
    machine = list(services.audit.events(Trail.MACHINE))
    assert (machine[-1].action, machine[-1].actor, machine[-1].reason) == (
        "machine.suspended", "root-admin", "leaked token"
    )  # fmt: skip


async def test_an_auditor_may_look_but_not_disable(services: GatewayServices) -> None:
    auditor = add_person(services, "alice", "auditors")
    add_person(services, "zed", "ops")
    app = PamgateConsole(services)
    async with app.run_test(size=SIZE) as pilot:
        await open_section(pilot, auditor, "6", IdentitiesScreen)
        humans = await wait_for_rows(pilot, "#human-table")
        await pilot.press("down", "x")
        await wait_for(pilot, lambda: noticed(app, "You need the admin role to disable users"))
        assert humans.selected_key == "zed"
        await pilot.pause(0.2)
        assert not services.users.get("zed").disabled
    assert not any(r.action == "user.disabled" for r in services.audit.events(Trail.HUMAN))


async def test_reset_mfa_needs_the_name_typed_and_shows_the_new_secret(
    services: GatewayServices,
) -> None:
    admin = add_person(services, "root-admin", "pamgate-admins")
    zed = add_person(services, "zed", "ops")
    app = PamgateConsole(services)
    async with app.run_test(size=SIZE) as pilot:
        await open_section(pilot, admin, "6", IdentitiesScreen)
        await wait_for_rows(pilot, "#human-table")
        await pilot.press("down", "m")
        await answer(pilot, "ze")
        await wait_for(pilot, lambda: noticed(app, "nothing was changed"))
        assert services.users.credentials_match("zed", zed.password, zed.secret)

        await pilot.press("m")
        await answer(pilot, "zed")
        await wait_for(pilot, lambda: isinstance(app.screen, EnrolmentDialog))
        shown = str(app.screen.query_one("#secret", Static).render())
        secret = shown.removeprefix("Secret: ")
        assert services.users.credentials_match("zed", zed.password, secret)
        assert "otpauth://totp/" in str(app.screen.query_one("#uri", Static).render())
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, IdentitiesScreen))
    actors = [(r.action, r.actor) for r in services.audit.events(Trail.HUMAN)]
    assert actors.count(("user.mfa_reset", "root-admin")) == 1


async def test_offboard_needs_the_name_and_a_reason(services: GatewayServices) -> None:
    admin = add_person(services, "root-admin", "pamgate-admins")
    add_machine(services, "backup-bot")
    app = PamgateConsole(services)
    async with app.run_test(size=SIZE) as pilot:
        await open_section(pilot, admin, "6", IdentitiesScreen)
        await pilot.press("right_square_bracket")
        await wait_for_rows(pilot, "#machine-table")

        await pilot.press("f")
        await answer(pilot, "backup")
        await wait_for(pilot, lambda: noticed(app, "nothing was changed"))
        assert services.machines.get("backup-bot").status == "active"

        await pilot.press("f")
        await answer(pilot, "backup-bot")
        await answer(pilot, "")  # an empty reason is refused
        problem = str(app.screen.query_one("#problem", Static).render())
        assert problem == "This cannot be empty."
        await answer(pilot, "retired")
        await wait_for(pilot, lambda: services.machines.get("backup-bot").status == "offboarded")
        await wait_for(pilot, lambda: noticed(app, "offboarded; 0 certificate"))

        await pilot.press("g")  # nothing outstanding: said plainly
        await answer(pilot, "cleanup")
        await wait_for(pilot, lambda: noticed(app, "no certificate left"))

        await pilot.press("s")  # offboarding is final
        await wait_for(pilot, lambda: noticed(app, "backup-bot is offboarded: you cannot suspend"))
    machine = [(r.action, r.actor, r.reason) for r in services.audit.events(Trail.MACHINE)]
    assert ("machine.offboarded", "root-admin", "retired") in machine


def test_review_date_is_flagged_once_overdue() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    assert str(review_cell(None, now)) == "-"
    assert str(review_cell(now + timedelta(days=1), now)) == "2026-03-02"
    assert str(review_cell(now - timedelta(days=1), now)) == "2026-02-28 OVERDUE"
