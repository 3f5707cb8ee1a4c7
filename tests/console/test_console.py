"""The console's sign-in, roles, idle lock, and the Requests, Sessions and Break-glass sections.

Textual Pilot drives the real app against real services on a temporary
database; the end-to-end test approves, in the console, a stock ``ssh``
session that waits on the real gateway.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from textual.widgets import DataTable

from gateway.config import load_config
from gateway.domain.audit.trail import Trail
from gateway.domain.sessions import SessionStart
from gateway.services import GatewayServices
from tests.support.console import (
    Person,
    add_person,
    console_services,
    last_notification,
    rows,
    sign_in,
    table_shows,
    wait_for,
)
from tests.support.gateway import Gateway, start_waiting
from tui.app import PamgateConsole
from tui.screens.breakglass import BreakGlassScreen
from tui.screens.login import LoginScreen
from tui.screens.requests import RequestsScreen
from tui.screens.sessions import SessionsScreen

SIZE = (80, 24)


@pytest.fixture()
def services(tmp_path: Path) -> Iterator[GatewayServices]:
    opened = console_services(tmp_path)
    yield opened
    opened.close()


def request_for(services: GatewayServices, user: str, reason: str = "rotate keys") -> int:
    rule = services.config.rules[0]
    return services.requests.create(
        user=user, target="web01", account="root", rule=rule, reason=reason, source="10.0.0.1"
    ).id


# -- signing in ---------------------------------------------------------------------


async def test_wrong_factors_are_refused_and_audited(services: GatewayServices) -> None:
    bob = add_person(services, "bob", "approvers")
    app = PamgateConsole(services)
    async with app.run_test(size=SIZE) as pilot:
        await sign_in(pilot, bob, code="000000")
        assert app.user is None
        assert isinstance(app.screen, LoginScreen)
        assert "Wrong user name, password or code" in str(app.screen.query_one("#message").render())
        await sign_in(pilot, bob)
        assert app.user is not None and app.user.name == "bob"
        assert isinstance(app.screen, RequestsScreen)
    actions = [(e.action, e.actor) for e in services.audit.events(Trail.HUMAN)
               if e.action.startswith("auth.")]  # fmt: skip
    assert actions == [("auth.failure", "bob"), ("auth.success", "bob")]


async def test_users_without_a_console_role_cannot_sign_in(services: GatewayServices) -> None:
    alice = add_person(services, "alice", "ops")
    app = PamgateConsole(services)
    async with app.run_test(size=SIZE) as pilot:
        await sign_in(pilot, alice)
        await wait_for(pilot, lambda: "no console role" in str(
            app.screen.query_one("#message").render()))  # fmt: skip
        assert app.user is None


async def test_idle_console_locks_itself(services: GatewayServices) -> None:
    bob = add_person(services, "bob", "approvers")
    request_for(services, "alice")
    app = PamgateConsole(services, idle_lock_seconds=1.5)
    async with app.run_test(size=SIZE) as pilot:
        await sign_in(pilot, bob)
        await wait_for(pilot, lambda: isinstance(app.screen, RequestsScreen))
        await wait_for(pilot, lambda: isinstance(app.screen, LoginScreen), timeout=5)
        assert app.user is None
        assert "Locked after" in str(app.screen.query_one("#message").render())
        await pilot.press("1")  # section keys do nothing while locked
        assert isinstance(app.screen, LoginScreen)


def test_the_idle_check_ticking_while_no_screen_is_up_does_nothing(
    services: GatewayServices,
) -> None:
    """The console's screens are gone before its timers stop when it closes; the idle
    check must not raise then (it once failed a console test with ScreenStackError)."""
    app = PamgateConsole(services, idle_lock_seconds=0)
    assert app.screen_stack == []
    app._lock_when_idle()  # noqa: SLF001 - the timer's callback, called as the timer would
    assert app.user is None


async def test_a_section_says_plainly_which_role_is_missing(services: GatewayServices) -> None:
    bob = add_person(services, "bob", "approvers")
    app = PamgateConsole(services)
    async with app.run_test(size=SIZE) as pilot:
        await sign_in(pilot, bob)
        await pilot.press("2")
        await wait_for(pilot, lambda: isinstance(app.screen, SessionsScreen))
        message = str(app.screen.query_one(".missing-role").render())
        assert "You need the admin or auditor role to see live sessions" in message


async def test_bindings_are_in_the_command_palette(services: GatewayServices) -> None:
    bob = add_person(services, "bob", "approvers")
    app = PamgateConsole(services)
    async with app.run_test(size=SIZE) as pilot:
        await sign_in(pilot, bob)
        titles = {command.title for command in app.get_system_commands(app.screen)}
        assert {"Approve", "Deny", "Requests", "Audit", "Lock"} <= titles


# -- requests ---------------------------------------------------------------------


async def test_approver_approves_and_denies_with_comments(services: GatewayServices) -> None:
    bob = add_person(services, "bob", "approvers")
    first = request_for(services, "alice", "deploy [bold]hotfix[/bold]")
    second = request_for(services, "carol", "curious")
    app = PamgateConsole(services)
    async with app.run_test(size=SIZE) as pilot:
        await sign_in(pilot, bob)
        await wait_for(pilot, lambda: len(rows(app, "#pending")) == 2)
        assert rows(app, "#pending")[0][:4] == [
            str(first),
            "alice",
            "root@web01",
            "deploy [bold]hotfix[/bold]",
        ]
        assert rows(app, "#pending")[0][5] == "0/1"
        await pilot.press("a")
        await pilot.press(*"looks fine", "enter")
        await wait_for(pilot, lambda: len(rows(app, "#pending")) == 1)
        await pilot.press("d", "enter")  # a denial needs a comment
        assert "cannot be empty" in str(app.screen.query_one("#problem").render())
        await pilot.press(*"not today", "enter")
        await wait_for(pilot, lambda: not rows(app, "#pending"))
        await wait_for(pilot, lambda: len(rows(app, "#recent")) == 2)
    approved = services.requests.get(first)
    assert (approved.status, approved.decided_by, approved.comment) == (
        "approved",
        "bob",
        "looks fine",
    )
    denied = services.requests.get(second)
    assert (denied.status, denied.decided_by, denied.comment) == ("denied", "bob", "not today")


async def test_new_requests_appear_within_a_second(services: GatewayServices) -> None:
    bob = add_person(services, "bob", "approvers")
    app = PamgateConsole(services)
    async with app.run_test(size=SIZE) as pilot:
        await sign_in(pilot, bob)
        await wait_for(pilot, lambda: isinstance(app.screen, RequestsScreen))
        request_for(services, "alice")
        started = time.monotonic()
        await wait_for(pilot, lambda: len(rows(app, "#pending")) == 1, timeout=3)
        assert time.monotonic() - started < 1.6


async def test_own_requests_are_shown_but_cannot_be_approved(services: GatewayServices) -> None:
    bob = add_person(services, "bob", "approvers", "ops")
    own = request_for(services, "bob")
    app = PamgateConsole(services)
    async with app.run_test(size=SIZE) as pilot:
        await sign_in(pilot, bob)
        await wait_for(pilot, lambda: len(rows(app, "#pending")) == 1)
        assert rows(app, "#pending")[0][1] == "bob (yours)"
        await pilot.press("a")
        await pilot.pause(0.2)
        assert "your own" in last_notification(app)
        assert isinstance(app.screen, RequestsScreen)
    assert services.requests.get(own).status == "pending"


async def test_auditors_see_requests_but_cannot_decide(services: GatewayServices) -> None:
    eve = add_person(services, "eve", "auditors")
    request_for(services, "alice")
    app = PamgateConsole(services)
    async with app.run_test(size=SIZE) as pilot:
        await sign_in(pilot, eve)
        await wait_for(pilot, lambda: len(rows(app, "#pending")) == 1)
        await pilot.press("a")
        await pilot.pause(0.2)
        assert "You need the approver role to approve requests" in last_notification(app)


# -- sessions ---------------------------------------------------------------------


def open_session(services: GatewayServices, user: str, lane: str = "human") -> str:
    session_id = services.ledger.new_session_id()
    services.ledger.open(session_id, SessionStart(
        lane=lane, user=user, target="web01", account="root", source="10.0.0.1",
        authority="policy:ops-web01", kind="shell",
    ))  # fmt: skip
    return session_id


async def test_sessions_lists_both_lanes_and_terminates_with_a_reason(
    services: GatewayServices,
) -> None:
    root = add_person(services, "root-admin", "pamgate-admins")
    human = open_session(services, "alice")
    open_session(services, "svc-backup", lane="machine")
    app = PamgateConsole(services)
    async with app.run_test(size=SIZE) as pilot:
        await sign_in(pilot, root)
        await pilot.press("2")
        await wait_for(pilot, lambda: isinstance(app.screen, SessionsScreen)
                       and len(rows(app, "#live")) == 2)  # fmt: skip
        lanes = {row[0] + ":" + row[1] for row in rows(app, "#live")}
        assert lanes == {"H:alice", "M:svc-backup"}
        await pilot.press("t")
        await pilot.press(*"suspicious activity", "enter")
        await wait_for(pilot, lambda: services.ledger.termination_requested(human) is not None)
    assert services.ledger.termination_requested(human) == (
        "terminated by root-admin: suspicious activity"
    )
    audited = [e for e in services.audit.events(Trail.HUMAN)
               if e.action == "session.terminate_requested"]  # fmt: skip
    assert audited and audited[0].actor == "root-admin" and audited[0].session_id == human


# -- break-glass --------------------------------------------------------------------


def invoke_breakglass(services: GatewayServices, user: str) -> int:
    case, _ = services.breakglass.invoke(
        user=user, target="web01", account="root", rule=services.config.rules[0],
        justification="database down, pager INC-7 says restart now", source="10.0.0.1",
    )  # fmt: skip
    return case.id


async def test_breakglass_queue_and_verdicts(services: GatewayServices) -> None:
    reviewer = add_person(services, "rita", "auditors", "approvers")
    own = invoke_breakglass(services, "rita")
    other = invoke_breakglass(services, "alice")
    app = PamgateConsole(services)
    async with app.run_test(size=SIZE) as pilot:
        await sign_in(pilot, reviewer)
        await pilot.press("3")
        await wait_for(pilot, lambda: isinstance(app.screen, BreakGlassScreen)
                       and len(rows(app, "#cases")) == 2)  # fmt: skip
        assert [row[0] for row in rows(app, "#cases")] == [str(other), str(own)]
        await pilot.press("down", "v")  # her own case
        await pilot.pause(0.2)
        assert "cannot review your own" in last_notification(app)
        await pilot.press("up", "v")
        await pilot.press(*"restart was needed", "enter")
        await wait_for(pilot, lambda: services.breakglass.get(other).verdict is not None)
    reviewed = services.breakglass.get(other)
    assert (reviewed.verdict, reviewed.reviewed_by) == ("justified", "rita")
    assert services.breakglass.get(own).verdict is None


# -- snapshots ------------------------------------------------------------------------


def test_requests_screen_snapshot(snap_compare, tmp_path: Path) -> None:  # noqa: ANN001
    services = console_services(tmp_path)
    bob = add_person(services, "bob", "approvers")
    created = services.requests.get(request_for(services, "alice", "rotate the backup key"))
    # A still picture: no refresh after the first, and ages from a pinned clock.
    app = PamgateConsole(services, refresh_seconds=3600,
                         clock=lambda: created.created_at + timedelta(minutes=5))  # fmt: skip

    async def run_before(pilot) -> None:  # noqa: ANN001
        await sign_in(pilot, bob)
        await wait_for(pilot, lambda: table_shows(app, "#pending", 1))

    try:
        assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
    finally:
        services.close()


def test_breakglass_screen_snapshot(snap_compare, tmp_path: Path) -> None:  # noqa: ANN001
    services = console_services(tmp_path)
    rita = add_person(services, "rita", "auditors")
    case = services.breakglass.get(invoke_breakglass(services, "alice"))
    app = PamgateConsole(services, refresh_seconds=3600,
                         clock=lambda: case.created_at + timedelta(minutes=1))  # fmt: skip

    async def run_before(pilot) -> None:  # noqa: ANN001
        await sign_in(pilot, rita)
        await pilot.press("3")
        await wait_for(pilot, lambda: isinstance(app.screen, BreakGlassScreen)
                       and table_shows(app, "#cases", 1))  # fmt: skip

    try:
        assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
    finally:
        services.close()


# -- end to end: a stock ssh session approved in the console ---------------------------


async def test_ssh_session_waits_and_proceeds_when_approved_in_the_console(
    gateway: Gateway,
) -> None:
    requester = gateway.make_user(groups=("requesters",))
    approver_user = gateway.make_user(groups=("leads", "approvers"))
    approver = Person(approver_user.name, approver_user.password or "", approver_user.totp_secret)
    process, request_id = start_waiting(gateway, requester, "echo approved-in-console")
    services = GatewayServices.open(load_config(gateway.config_path))
    try:
        app = PamgateConsole(services)
        async with app.run_test(size=SIZE) as pilot:
            await sign_in(pilot, approver)
            await wait_for(pilot, lambda: any(row[0] == str(request_id)
                                              for row in rows(app, "#pending")))  # fmt: skip
            table = app.screen.query_one("#pending", DataTable)
            table.move_cursor(row=[row[0] for row in rows(app, "#pending")].index(str(request_id)))
            await pilot.press("a", *"approved from the console", "enter")
            await wait_for(pilot, lambda: services.requests.get(request_id).status == "approved")
        stdout, stderr = process.communicate(timeout=20)
    finally:
        services.close()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert stdout == b"approved-in-console\n"
    approved = [e for e in gateway.audit.events(Trail.HUMAN)
                if e.action == "request.approved" and e.actor == approver.name]  # fmt: skip
    assert approved and approved[-1].reason == "approved from the console"


def test_terminating_from_the_console_ends_the_real_session_with_the_reason(
    gateway: Gateway,
) -> None:
    user = gateway.make_user()
    process = gateway.start_ssh(user, "web01", "sleep 30")
    services = GatewayServices.open(load_config(gateway.config_path))
    try:
        deadline = time.monotonic() + 15
        live: list[str] = []
        while not live and time.monotonic() < deadline:
            live = [s.id for s in services.ledger.live() if s.user == user.name]
            time.sleep(0.1)
        assert live, "the session never went live"
        started = time.monotonic()
        services.ledger.request_termination(live[0], actor="root-admin", reason="policy breach")
        _, stderr = process.communicate(timeout=10)
        assert time.monotonic() - started <= 2.5
    finally:
        services.close()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 255
    assert b"terminated by root-admin: policy breach" in stderr


async def test_watching_a_live_session_shows_its_output_and_is_audited(
    services: GatewayServices,
) -> None:
    eve = add_person(services, "eve", "auditors")
    session_id = services.ledger.new_session_id()
    path = services.config.recordings_dir / "live" / f"{session_id}.cast"
    path.parent.mkdir(parents=True)
    header = '{"version": 2, "width": 40, "height": 6, "timestamp": 0}\n'
    path.write_text(header + '[0.1, "o", "$ tail -f app.log\\r\\n"]\n')
    services.ledger.open(session_id, SessionStart(
        lane="human", user="alice", target="web01", account="root", source="10.0.0.1",
        authority="policy:ops-web01", kind="shell",
    ), recording_path=f"live/{session_id}.cast")  # fmt: skip
    app = PamgateConsole(services)
    async with app.run_test(size=SIZE) as pilot:
        await sign_in(pilot, eve)
        await pilot.press("2")
        await wait_for(pilot, lambda: isinstance(app.screen, SessionsScreen)
                       and len(rows(app, "#live")) == 1)  # fmt: skip
        await pilot.press("w")
        await wait_for(pilot, lambda: "tail -f app.log" in screen_text(app))
        with path.open("a") as recording:  # the session goes on writing
            recording.write('[0.5, "o", "GET /health 200\\r\\n"]\n')
        await wait_for(pilot, lambda: "GET /health 200" in screen_text(app), timeout=3)
    watched = [e for e in services.audit.events(Trail.HUMAN) if e.action == "recording.watched"]
    assert watched and watched[0].actor == "eve" and watched[0].session_id == session_id


def screen_text(app: PamgateConsole) -> str:
    from tui.widgets import TerminalView

    return "\n".join(view.image.text for view in app.screen.query(TerminalView))


async def test_admin_revokes_the_grant_behind_a_session(services: GatewayServices) -> None:
    root = add_person(services, "root-admin", "pamgate-admins")
    bob = add_person(services, "bob", "approvers")
    request = request_for(services, "alice")
    grant_id = services.requests.approve(request, bob.name, "ok").grant_id
    assert grant_id is not None
    session_id = services.ledger.new_session_id()
    services.ledger.open(session_id, SessionStart(
        lane="human", user="alice", target="web01", account="root", source="10.0.0.1",
        authority=f"grant:{grant_id}", kind="shell",
    ))  # fmt: skip
    app = PamgateConsole(services)
    async with app.run_test(size=SIZE) as pilot:
        await sign_in(pilot, root)
        await pilot.press("2")
        await wait_for(pilot, lambda: isinstance(app.screen, SessionsScreen)
                       and len(rows(app, "#live")) == 1)  # fmt: skip
        await pilot.press("g", *"no longer needed", "enter")
        await wait_for(pilot, lambda: services.requests.grant(grant_id).revoked)
    grant = services.requests.grant(grant_id)
    assert grant.revoke_reason == "no longer needed"


async def test_switching_and_locking_while_data_loads_does_not_crash(
    services: GatewayServices,
) -> None:
    bob = add_person(services, "bob", "approvers", "auditors", "pamgate-admins")
    request_for(services, "alice")
    app = PamgateConsole(services, refresh_seconds=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await sign_in(pilot, bob)
        for key in "1234561234561":  # leave each section while its workers still run
            await pilot.press(key)
        await pilot.press("ctrl+l")
        await pilot.pause(0.5)
        assert isinstance(app.screen, LoginScreen)
        assert app.is_running


async def test_a_disabled_operator_is_signed_out_of_an_open_console(
    services: GatewayServices,
) -> None:
    carl = add_person(services, "carl", "pamgate-admins")
    app = PamgateConsole(services)
    async with app.run_test(size=SIZE) as pilot:
        await sign_in(pilot, carl)
        await wait_for(pilot, lambda: isinstance(app.screen, RequestsScreen))
        services.users.set_disabled("carl", True, actor="another-admin")
        started = time.monotonic()
        await wait_for(pilot, lambda: isinstance(app.screen, LoginScreen), timeout=5)
        assert time.monotonic() - started < 2.5
        assert app.user is None and app.actions is None
        assert "carl was disabled" in str(app.screen.query_one("#message").render())
        await pilot.pause(0.2)  # let the login screen finish mounting before the app exits
