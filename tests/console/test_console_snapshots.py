"""Every console screen drawn at 80x24 and at 120x36 (pytest-textual-snapshot).

Each picture is still: no refresh after the first (``refresh_seconds=3600``),
ages measured from a pinned clock, sessions and audit events stamped with a
fixed time, and session ids chosen here. ``--snapshot-update`` redraws them
after a deliberate change; look at the SVGs before committing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from textual.pilot import Pilot

from gateway.domain.sessions import SessionLedger, SessionStart
from gateway.services import GatewayServices
from tests.support.console import (
    add_person,
    console_services,
    record_session,
    sign_in,
    table_shows,
    wait_for,
)
from tui.app import PamgateConsole
from tui.screens.audit import AuditScreen
from tui.screens.breakglass import BreakGlassScreen
from tui.screens.dialogs import DetailDialog
from tui.screens.help import HelpScreen
from tui.screens.identities import IdentitiesScreen
from tui.screens.login import LoginScreen
from tui.screens.recordings import RecordingsScreen
from tui.screens.replay import ReplayScreen
from tui.screens.sessions import SessionsScreen, WatchScreen
from tui.tables import LiveTable

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 36), id="120x36")]
NOW = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)
SESSION = "5e55" + "0" * 28
PROMPT = "\x1b[1;32muser@web01\x1b[0m:\x1b[1;34m~\x1b[0m$ "

Snap = Callable[..., bool]


@pytest.fixture()
def services(tmp_path: Path) -> GatewayServices:
    opened = console_services(tmp_path)
    # Audit events carry their time: pinned, so the trail (and its hashes) are the same each run.
    opened.audit._clock = lambda: NOW.timestamp()
    return opened


def still_console(services: GatewayServices) -> PamgateConsole:
    return PamgateConsole(services, refresh_seconds=3600, clock=lambda: NOW + timedelta(minutes=5))


def live_session(services: GatewayServices, session_id: str = SESSION) -> None:
    ledger = SessionLedger(services.store, services.audit, "node-a", clock=lambda: NOW.timestamp())
    path = services.config.recordings_dir / "live" / f"{session_id}.cast"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [{"version": 2, "width": 60, "height": 8, "timestamp": 0}, [0.1, "o", PROMPT],
             [0.3, "o", "tail -f /var/log/app.log\r\nGET /health 200\r\n"]]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    ledger.open(session_id, SessionStart(
        lane="human", user="alice", target="web01", account="root", source="10.0.0.1",
        authority="grant:7", kind="shell",
    ), recording_path=f"live/{session_id}.cast")  # fmt: skip


def recorded(services: GatewayServices) -> None:
    events: list[tuple[float, str, str]] = [(0.2, "o", PROMPT)]
    typed = ((1.0, "ls /etc", "hosts  passwd\r\n"), (6.0, "uptime", " up 3 days\r\n"),
             (12.0, "vi notes.txt", ""))
    for at, line, output in typed:
        events += [(at, "i", line + "\r"), (at + 0.01, "o", line + "\r\n" + output + PROMPT)]
    record_session(services, "a11ce" + "0" * 27, "alice", events, started=NOW.timestamp(),
                   width=80, height=20)  # fmt: skip
    record_session(services, "b0b" + "1" * 29, "bob", [(0.1, "o", "backup done\n")],
                   started=NOW.timestamp() - 3600, kind="exec", authority="breakglass:2",
                   status="interrupted", terminated_by="root-admin")  # fmt: skip


async def press_until(pilot: Pilot, key: str, screen: type) -> None:
    await pilot.press(key)
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, screen))


@pytest.mark.parametrize("size", SIZES)
def test_login_screen(snap_compare: Snap, services: GatewayServices, size: tuple[int, int]) -> None:
    app = still_console(services)

    async def run_before(pilot: Pilot) -> None:
        await wait_for(pilot, lambda: isinstance(app.screen, LoginScreen))

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_requests_screen_with_badge(
    snap_compare: Snap, services: GatewayServices, size: tuple[int, int]
) -> None:
    bob = add_person(services, "bob", "approvers")
    created = services.requests.create(
        user="alice", target="web01", account="root", rule=services.config.rules[0],
        reason="rotate the backup key before the quarterly audit", source="10.0.0.1",
    )  # fmt: skip
    app = PamgateConsole(services, refresh_seconds=3600,
                         clock=lambda: created.created_at + timedelta(minutes=5))  # fmt: skip

    async def run_before(pilot: Pilot) -> None:
        await sign_in(pilot, bob)
        await wait_for(pilot, lambda: table_shows(app, "#pending", 1) and app.waiting.known)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_help_overlay(snap_compare: Snap, services: GatewayServices, size: tuple[int, int]) -> None:
    root = add_person(services, "root-admin", "pamgate-admins")
    app = still_console(services)

    async def run_before(pilot: Pilot) -> None:
        await sign_in(pilot, root)
        await press_until(pilot, "2", SessionsScreen)
        await press_until(pilot, "question_mark", HelpScreen)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_sessions_screen_and_detail(
    snap_compare: Snap, services: GatewayServices, size: tuple[int, int]
) -> None:
    eve = add_person(services, "eve", "auditors")
    live_session(services)
    app = still_console(services)

    async def run_before(pilot: Pilot) -> None:
        await sign_in(pilot, eve)
        await press_until(pilot, "2", SessionsScreen)
        await wait_for(pilot, lambda: table_shows(app, "#live", 1))
        await press_until(pilot, "enter", DetailDialog)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_watch_screen(snap_compare: Snap, services: GatewayServices, size: tuple[int, int]) -> None:
    eve = add_person(services, "eve", "auditors")
    live_session(services)
    app = still_console(services)

    async def run_before(pilot: Pilot) -> None:
        await sign_in(pilot, eve)
        await press_until(pilot, "2", SessionsScreen)
        await wait_for(pilot, lambda: table_shows(app, "#live", 1))
        await press_until(pilot, "w", WatchScreen)
        await wait_for(pilot, lambda: "GET /health" in app.screen.query_one("#watch-view")
                       .image.text)  # type: ignore[attr-defined]  # fmt: skip

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_breakglass_screen(
    snap_compare: Snap, services: GatewayServices, size: tuple[int, int]
) -> None:
    rita = add_person(services, "rita", "auditors")
    case, _ = services.breakglass.invoke(
        user="alice", target="web01", account="root", rule=services.config.rules[0],
        justification="database down, pager INC-7 says restart now", source="10.0.0.1",
    )  # fmt: skip
    app = PamgateConsole(services, refresh_seconds=3600,
                         clock=lambda: case.created_at + timedelta(minutes=1))  # fmt: skip

    async def run_before(pilot: Pilot) -> None:
        await sign_in(pilot, rita)
        await press_until(pilot, "3", BreakGlassScreen)
        await wait_for(pilot, lambda: table_shows(app, "#cases", 1) and app.waiting.known)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_recordings_screen(
    snap_compare: Snap, services: GatewayServices, size: tuple[int, int]
) -> None:
    carol = add_person(services, "carol", "auditors")
    recorded(services)
    app = still_console(services)

    async def run_before(pilot: Pilot) -> None:
        await sign_in(pilot, carol)
        await press_until(pilot, "4", RecordingsScreen)
        await wait_for(pilot, lambda: table_shows(app, "#recordings", 2))

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_replay_screen(
    snap_compare: Snap, services: GatewayServices, size: tuple[int, int]
) -> None:
    carol = add_person(services, "carol", "auditors")
    recorded(services)
    app = still_console(services)

    async def run_before(pilot: Pilot) -> None:
        await sign_in(pilot, carol)
        screen = ReplayScreen("a11ce" + "0" * 27, at=7.0)
        app.push_screen(screen)
        await wait_for(pilot, lambda: screen.ready)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_replay_of_an_exec_session_with_the_command_overlay(
    snap_compare: Snap, services: GatewayServices, size: tuple[int, int]
) -> None:
    carol = add_person(services, "carol", "auditors")
    record_session(services, "e0ec" + "0" * 28, "svc", [(0.1, "o", "one\ntwo\nthree\n")],
                   started=NOW.timestamp(), kind="exec", width=size[0], height=10)  # fmt: skip
    app = still_console(services)

    async def run_before(pilot: Pilot) -> None:
        await sign_in(pilot, carol)
        screen = ReplayScreen("e0ec" + "0" * 28, at=1.0)
        app.push_screen(screen)
        await wait_for(pilot, lambda: screen.ready)
        await pilot.press("c")
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_audit_screen(snap_compare: Snap, services: GatewayServices, size: tuple[int, int]) -> None:
    carol = add_person(services, "carol", "auditors")
    add_person(services, "zed", "ops")
    services.users.set_disabled("zed", True, actor="root-admin", reason="left the company")
    app = still_console(services)

    async def run_before(pilot: Pilot) -> None:
        await sign_in(pilot, carol)
        await press_until(pilot, "5", AuditScreen)
        table = app.screen.query_one("#human-events", LiveTable)
        await wait_for(pilot, lambda: table.row_count >= 4)
        # The sign-in's own event carries the real time: filtered out for a still picture.
        await pilot.press("slash", *"action=user.", "enter")
        # Two created, one disabled.
        await wait_for(pilot, lambda: table_shows(app, "#human-events", 3))
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_identities_screen(
    snap_compare: Snap, services: GatewayServices, size: tuple[int, int]
) -> None:
    root = add_person(services, "root-admin", "pamgate-admins")
    add_person(services, "zed", "ops")
    app = still_console(services)

    async def run_before(pilot: Pilot) -> None:
        await sign_in(pilot, root)
        await press_until(pilot, "6", IdentitiesScreen)
        await wait_for(pilot, lambda: table_shows(app, "#human-table", 2))

    assert snap_compare(app, terminal_size=size, run_before=run_before)
