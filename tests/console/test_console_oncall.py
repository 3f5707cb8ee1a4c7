"""The console for the on-call approver and the week-long audit (issue 22), point by point.

Textual's Pilot drives the real console against real services on a temporary
database, with recordings written and sealed as the gateway writes them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.color import Color, ColorSystem
from textual.pilot import Pilot
from textual.widgets import Input, Label, Static

from gateway.domain.audit.trail import ActorType, AuditEvent, Trail
from gateway.domain.operators import ActionRefused
from gateway.domain.sessions import SessionEnd, SessionStart
from gateway.services import GatewayServices
from tests.support.console import (
    Person,
    add_person,
    console_services,
    last_notification,
    record_session,
    rows,
    sign_in,
    wait_for,
)
from tui.app import SECTIONS, PamgateConsole
from tui.screens.audit import AuditScreen
from tui.screens.breakglass import BreakGlassScreen
from tui.screens.dialogs import DetailDialog, TextDialog
from tui.screens.help import HelpScreen
from tui.screens.identities import IdentitiesScreen
from tui.screens.login import LoginScreen
from tui.screens.recordings import RecordingFilter, RecordingsScreen
from tui.screens.replay import ReplayScreen
from tui.screens.requests import RequestsScreen
from tui.screens.sessions import SessionsScreen, WatchScreen
from tui.tables import LiveTable
from tui.widgets import TerminalView

SMALL, LARGE = (80, 24), (120, 36)
STARTED = datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC).timestamp()


@pytest.fixture()
def services(tmp_path: Path) -> Iterator[GatewayServices]:
    opened = console_services(tmp_path)
    yield opened
    opened.close()


def request_for(services: GatewayServices, user: str, reason: str = "rotate keys") -> int:
    return services.requests.create(
        user=user, target="web01", account="root", rule=services.config.rules[0],
        reason=reason, source="10.0.0.1",
    ).id  # fmt: skip


def invoke_breakglass(services: GatewayServices, user: str, why: str = "") -> int:
    case, _ = services.breakglass.invoke(
        user=user, target="web01", account="root", rule=services.config.rules[0],
        justification=why or "database down, pager INC-7 says restart now", source="10.0.0.1",
    )  # fmt: skip
    return case.id


def open_live(services: GatewayServices, user: str, kind: str = "shell") -> str:
    session_id = services.ledger.new_session_id()
    services.ledger.open(session_id, SessionStart(
        lane="human", user=user, target="web01", account="root", source="10.0.0.1",
        authority="policy:ops-web01", kind=kind,
    ))  # fmt: skip
    return session_id


def bar_text(app: PamgateConsole) -> str:
    return "\n".join(str(widget.render()) for widget in app.screen.query(".sections-bar"))


def notifications(app: PamgateConsole) -> list[str]:
    return [f"{note.title}: {note.message}" for note in app._notifications]


async def go(pilot: Pilot, key: str, screen: type) -> None:
    await pilot.press(key)
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, screen))


def shell_events(lines: int, *, step: float = 1.0) -> list[tuple[float, str, str]]:
    """A long shell session: a prompt, then a line of output each ``step`` seconds."""
    events = [(0.1, "o", "$ ")]
    for number in range(lines):
        events.append((0.5 + number * step, "o", f"line {number}\r\n$ "))
    return events


# -- 1. new requests and break-glass uses are announced on every screen ------------------


async def test_an_approver_on_any_screen_is_told_of_a_new_request_within_2_s(
    services: GatewayServices,
) -> None:
    bob = add_person(services, "bob", "approvers", "auditors")
    app = PamgateConsole(services)
    bells: list[float] = []
    app.bell = lambda: bells.append(time.monotonic())  # type: ignore[method-assign]
    async with app.run_test(size=SMALL) as pilot:
        await sign_in(pilot, bob)
        await go(pilot, "5", AuditScreen)  # far from Requests
        await pilot.pause(1.2)  # the first read is the baseline: nothing waits
        assert not bells and "req" not in bar_text(app)

        request_id = request_for(services, "alice", "restart the payment service")
        started = time.monotonic()
        await wait_for(pilot, lambda: any(  # the toast
            f"New request #{request_id}" in n and "restart the payment service" in n
            for n in notifications(app)), timeout=3)  # fmt: skip
        assert time.monotonic() - started < 2.0
        assert len(bells) == 1 and bells[0] - started < 2.0  # the bell
        assert "1 req" in bar_text(app)  # the badge, on this screen

        invoke_breakglass(services, "carol")  # break-glass is announced, not a "cancelled" row
        await wait_for(pilot, lambda: any("BREAK-GLASS" in n and "carol" in n
                                          for n in notifications(app)), timeout=3)  # fmt: skip
        assert len(bells) == 2 and "1 bg" in bar_text(app)

        await go(pilot, "4", RecordingsScreen)  # the badge stays on every screen
        assert "1 req 1 bg" in bar_text(app)


async def test_the_lock_screen_counts_what_waits_without_saying_who(
    services: GatewayServices,
) -> None:
    bob = add_person(services, "bob", "approvers")
    request_for(services, "alice")
    app = PamgateConsole(services)
    bells: list[float] = []
    app.bell = lambda: bells.append(time.monotonic())  # type: ignore[method-assign]
    async with app.run_test(size=SMALL) as pilot:
        await sign_in(pilot, bob)
        await wait_for(pilot, lambda: "1 req" in bar_text(app))
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: isinstance(app.screen, LoginScreen))
        waiting = app.screen.query_one("#waiting", Label)
        assert "1 access request waiting" in str(waiting.render())

        request_for(services, "mallory", "secret project name")
        await wait_for(pilot, lambda: "2 access requests waiting" in str(waiting.render()))
        assert bells, "a new request rings the bell on the lock screen too"
        assert not any("mallory" in n or "secret project" in n for n in notifications(app))


async def test_a_request_given_up_for_break_glass_says_so(services: GatewayServices) -> None:
    bob = add_person(services, "bob", "approvers")
    request_id = request_for(services, "alice")
    services.requests.cancel(request_id, "alice")  # "b" at the waiting prompt
    case_id = invoke_breakglass(services, "alice")
    app = PamgateConsole(services)
    async with app.run_test(size=SMALL) as pilot:
        await sign_in(pilot, bob)
        await wait_for(pilot, lambda: len(rows(app, "#recent")) == 1)
        assert rows(app, "#recent")[0][3] == f"BREAK-GLASS #{case_id}"  # not "cancelled"


# -- 2 and 3. replay: the whole width, the command list as an overlay; exec output -------


@pytest.mark.parametrize(("size", "recording"), [(LARGE, (120, 32)), (SMALL, (80, 20))])
async def test_replay_shows_the_whole_recording_and_the_command_list_on_demand(
    services: GatewayServices, size: tuple[int, int], recording: tuple[int, int]
) -> None:
    carol = add_person(services, "carol", "auditors")
    width, height = recording
    last = f"\x1b[{height};1H-- INSERT --" + " " * (width - 24) + "status-line-end"
    record_session(services, "c0ffee" + "0" * 26, "alice",
                   [(0.1, "o", "\x1b[2J\x1b[Hfirst line"), (0.2, "o", last)],
                   started=STARTED, width=width, height=height)  # fmt: skip
    app = PamgateConsole(services)
    async with app.run_test(size=size) as pilot:
        await sign_in(pilot, carol)
        screen = ReplayScreen("c0ffee" + "0" * 26)
        app.push_screen(screen)
        await wait_for(pilot, lambda: screen.ready)
        await pilot.pause(0.2)
        view = screen.query_one("#terminal", TerminalView)
        commands = screen.query_one("#commands")
        assert view.size.width >= width and view.size.height >= height
        assert not commands.display  # no room beside it: hidden until asked for
        await pilot.press("c")
        await pilot.pause(0.1)
        assert commands.display and commands.region.width > 0
        assert view.size.width >= width  # an overlay: the recording keeps its width
        await pilot.press("c")
        await pilot.pause(0.1)
        assert not commands.display


async def test_wide_consoles_show_the_command_list_beside_the_recording(
    services: GatewayServices,
) -> None:
    carol = add_person(services, "carol", "auditors")
    record_session(services, "c0ffee" + "1" * 26, "alice", [(0.1, "o", "hello")],
                   started=STARTED, width=80, height=24)  # fmt: skip
    app = PamgateConsole(services)
    async with app.run_test(size=LARGE) as pilot:
        await sign_in(pilot, carol)
        screen = ReplayScreen("c0ffee" + "1" * 26)
        app.push_screen(screen)
        await wait_for(pilot, lambda: screen.ready)
        await pilot.pause(0.2)
        view = screen.query_one("#terminal", TerminalView)
        commands = screen.query_one("#commands")
        assert commands.display and view.size.width >= 80
        assert commands.region.x >= view.region.right  # beside, not over


async def test_exec_recordings_play_without_a_staircase(services: GatewayServices) -> None:
    carol = add_person(services, "carol", "auditors")
    output = "backup started\nwrote 120 files\ndone\n"  # no pty: bare line feeds
    record_session(services, "e0ec" + "0" * 28, "svc", [(0.1, "o", output)],
                   started=STARTED, kind="exec")  # fmt: skip
    app = PamgateConsole(services)
    async with app.run_test(size=LARGE) as pilot:
        await sign_in(pilot, carol)
        screen = ReplayScreen("e0ec" + "0" * 28)
        app.push_screen(screen)
        await wait_for(pilot, lambda: screen.ready)
        await pilot.press("end")
        await wait_for(pilot, lambda: screen.ready and "done" in screen_text(screen))
        lines = screen_text(screen).splitlines()
        assert lines[:3] == ["backup started", "wrote 120 files", "done"]


def screen_text(screen: ReplayScreen | WatchScreen) -> str:
    view = screen.query_one(TerminalView)
    return "\n".join(line.rstrip() for line in view.image.text.splitlines())


# -- 4. destructive actions ask for a reason; nobody disables themselves ------------------


async def test_disabling_asks_a_reason_and_an_admin_cannot_disable_herself(
    services: GatewayServices,
) -> None:
    admin = add_person(services, "ada", "pamgate-admins")  # first by name
    add_person(services, "zed", "ops")
    app = PamgateConsole(services)
    async with app.run_test(size=SMALL) as pilot:
        await sign_in(pilot, admin)
        await go(pilot, "6", IdentitiesScreen)
        humans = app.screen.query_one("#human-table", LiveTable)
        await wait_for(pilot, lambda: humans.row_count == 2)
        assert humans.selected_key == "ada"
        await pilot.press("x")
        await pilot.pause(0.2)
        assert "cannot disable yourself" in last_notification(app)
        assert not isinstance(app.screen, TextDialog)

        await pilot.press("j", "x")  # zed: one keystroke only asks
        await wait_for(pilot, lambda: isinstance(app.screen, TextDialog))
        assert not services.users.get("zed").disabled
        await pilot.press("enter")  # no reason: refused in the dialog
        assert "cannot be empty" in str(app.screen.query_one("#problem").render())
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert not services.users.get("zed").disabled


def test_the_domain_refuses_self_disable_from_any_front_end(services: GatewayServices) -> None:
    add_person(services, "ada", "pamgate-admins")
    actions = services.operator_actions("ada")
    with pytest.raises(ActionRefused, match="ada may not disable yourself"):
        actions.set_user_disabled("ada", True, reason="testing")
    assert not services.users.get("ada").disabled
    refused = [e for e in services.audit.events(Trail.HUMAN) if e.action == "operator.refused"]
    assert refused and refused[-1].actor == "ada" and "disable yourself" in refused[-1].reason


# -- 5. Enter shows any row in full -----------------------------------------------------


async def test_enter_shows_reasons_comments_and_notes_in_full(services: GatewayServices) -> None:
    bob = add_person(services, "bob", "approvers", "auditors")
    reason = "migrate the ledger database to the new cluster; " * 6 + "END-OF-REASON"
    request_for(services, "alice", reason)
    case = invoke_breakglass(services, "carol", "payments down for everyone " * 4 + "END-JUST")
    add_person(services, "dave", "auditors")
    services.breakglass.review(case, "dave", "justified", "checked with INC-42 " * 5 + "END-NOTE")
    app = PamgateConsole(services)
    async with app.run_test(size=SMALL) as pilot:
        await sign_in(pilot, bob)
        await wait_for(pilot, lambda: len(rows(app, "#pending")) == 1)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DetailDialog))
        assert "END-OF-REASON" in dialog_text(app) and "Grant length" in dialog_text(app)
        await pilot.press("escape")

        await go(pilot, "3", BreakGlassScreen)
        await wait_for(pilot, lambda: len(rows(app, "#cases")) == 1)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DetailDialog))
        assert "END-JUST" in dialog_text(app) and "END-NOTE" in dialog_text(app)
        await pilot.press("escape")

        await go(pilot, "5", AuditScreen)
        table = app.screen.query_one("#human-events", LiveTable)
        await wait_for(pilot, lambda: table.row_count > 0)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DetailDialog))
        assert '"prev_hash"' in dialog_text(app)  # the event as JSON


async def test_the_audit_reason_column_is_on_screen_at_120_columns(
    services: GatewayServices,
) -> None:
    carol = add_person(services, "carol", "auditors")
    add_person(services, "zed", "ops")
    services.users.set_disabled("zed", True, actor="root-admin", reason="left the company")
    # What a week's trail holds: long actions, sessions as targets, policy authorities.
    services.audit.record(Trail.HUMAN, AuditEvent(
        actor="root-admin", actor_type=ActorType.ADMIN, action="session.terminate_requested",
        target="session:" + "4504a1" * 5 + "ab", authority="policy:admins-web01",
        reason="policy breach",
    ))  # fmt: skip
    app = PamgateConsole(services)
    async with app.run_test(size=LARGE) as pilot:
        await sign_in(pilot, carol)
        await go(pilot, "5", AuditScreen)
        table = app.screen.query_one("#human-events", LiveTable)
        await wait_for(pilot, lambda: table.row_count >= 3)
        await pilot.pause(0.2)
        columns = list(table.columns.values())
        labels = [str(column.label) for column in columns]
        reason = labels.index("Reason")
        right = sum(column.get_render_width(table) for column in columns[: reason + 1])
        assert right <= LARGE[0], labels


def dialog_text(app: PamgateConsole) -> str:
    return "\n".join(str(widget.render()) for widget in app.screen.query(Static))


# -- 6. the idle lock waits while a replay plays ----------------------------------------


async def test_the_idle_lock_does_not_fire_while_a_replay_plays(
    services: GatewayServices,
) -> None:
    carol = add_person(services, "carol", "auditors")
    record_session(services, "1d1e" + "0" * 28, "alice", shell_events(60), started=STARTED)
    app = PamgateConsole(services, idle_lock_seconds=1.5)
    async with app.run_test(size=SMALL) as pilot:
        await sign_in(pilot, carol)
        screen = ReplayScreen("1d1e" + "0" * 28)
        app.push_screen(screen)
        await wait_for(pilot, lambda: screen.ready)
        await pilot.press("space")
        await pilot.pause(3.5)
        assert app.screen is screen and app.user is not None and screen.playing
        await pilot.press("space")  # paused: the lock comes back
        await wait_for(pilot, lambda: isinstance(app.screen, LoginScreen), timeout=5)
        await pilot.pause(0.2)  # let the login screen finish mounting before the app exits


# -- 7. the highlight follows the item ---------------------------------------------------


async def test_the_highlight_follows_the_recording_not_the_row(
    services: GatewayServices,
) -> None:
    carol = add_person(services, "carol", "auditors")
    record_session(services, "01d" + "0" * 29, "alice", shell_events(2), started=STARTED)
    record_session(services, "1a7e" + "0" * 28, "bob", shell_events(2), started=STARTED + 60)
    app = PamgateConsole(services)
    async with app.run_test(size=SMALL) as pilot:
        await sign_in(pilot, carol)
        await go(pilot, "4", RecordingsScreen)
        table = app.screen.query_one("#recordings", LiveTable)
        await wait_for(pilot, lambda: table.row_count == 2)
        await pilot.press("j")  # alice's, the older one
        assert table.selected_key == "01d" + "0" * 29
        record_session(services, "ae1" + "0" * 29, "eve", shell_events(2), started=STARTED + 120)
        await wait_for(pilot, lambda: table.row_count == 3)
        assert table.selected_key == "01d" + "0" * 29
        await pilot.press("o")
        await wait_for(pilot, lambda: isinstance(app.screen, ReplayScreen))
        assert app.screen.session_id == "01d" + "0" * 29


async def test_the_highlight_follows_the_live_session(services: GatewayServices) -> None:
    eve = add_person(services, "eve", "auditors")
    first = open_live(services, "alice")
    second = open_live(services, "bob")
    app = PamgateConsole(services)
    async with app.run_test(size=SMALL) as pilot:
        await sign_in(pilot, eve)
        await go(pilot, "2", SessionsScreen)
        table = app.screen.query_one("#live", LiveTable)
        await wait_for(pilot, lambda: table.row_count == 2)
        await pilot.press("j")
        chosen = table.selected_key
        assert chosen in (first, second)
        services.ledger.close(first if chosen == second else second, SessionStart(
            lane="human", user="x", target="web01", account="root", source="10.0.0.1",
            authority="policy:ops-web01", kind="shell"), SessionEnd(status="closed"))  # fmt: skip
        open_live(services, "carl")
        open_live(services, "dora")
        await wait_for(pilot, lambda: table.row_count == 3)
        assert table.selected_key == chosen


# -- 8. discoverability ----------------------------------------------------------------


async def test_help_lists_every_key_of_the_screen(services: GatewayServices) -> None:
    root = add_person(services, "root-admin", "pamgate-admins")
    app = PamgateConsole(services)
    async with app.run_test(size=SMALL) as pilot:
        await sign_in(pilot, root)
        await wait_for(pilot, lambda: isinstance(app.screen, RequestsScreen))
        for key in ("question_mark", "f1", "h"):
            await pilot.press(key)
            await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
            text = str(app.screen.query_one("#help-keys", Static).render())
            for description in ("Approve", "Deny", "Detail", "Quit", "Lock", "Audit"):
                assert description in text, description
            await pilot.press("escape")
            await wait_for(pilot, lambda: isinstance(app.screen, RequestsScreen))
        await go(pilot, "6", IdentitiesScreen)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        text = str(app.screen.query_one("#help-keys", Static).render())
        assert "Offboard" not in text  # a Machines action, hidden on the Humans tab
        assert "Disable" in text and "Other tab" in text


async def test_ctrl_c_says_how_to_quit_in_plain_words(services: GatewayServices) -> None:
    app = PamgateConsole(services)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("ctrl+c")
        await pilot.pause(0.1)
        assert "Ctrl+Q" in last_notification(app)
        assert "[b]" not in last_notification(app)
        assert "ctrl+q" in app.screen.active_bindings  # and Quit is shown in the footer
        assert app.screen.active_bindings["ctrl+q"].binding.show


def test_a_letter_means_the_same_thing_on_every_screen() -> None:
    from tui.screens.dialogs import DetailDialog as Detail
    from tui.screens.sessions import WatchScreen as Watch

    screens = [factory for factory, _, _ in SECTIONS.values()]
    meanings: dict[str, set[str]] = {}
    for screen in [*screens, ReplayScreen, Watch, Detail, PamgateConsole, LiveTable]:
        for binding in screen.BINDINGS:  # type: ignore[attr-defined]
            for key in binding.key.split(","):  # type: ignore[union-attr]
                if len(key) == 1 and key.isalpha():
                    meanings.setdefault(key, set()).add(binding.action.split("(")[0])  # type: ignore[union-attr]
    clashes = {key: actions for key, actions in meanings.items() if len(actions) > 1}
    # q closes whatever is in front (a replay, a watch, a dialog); every other letter has one job.
    assert clashes.keys() <= {"q"}, clashes
    assert meanings["j"] == {"cursor_down"} and meanings["k"] == {"cursor_up"}
    assert meanings["t"] == {"terminate"} and meanings["o"] == {"open_recording"}
    assert meanings["g"] == {"revoke"}


async def test_j_and_k_move_in_every_list(services: GatewayServices) -> None:
    bob = add_person(services, "bob", "approvers")
    request_for(services, "alice")
    request_for(services, "carol")
    app = PamgateConsole(services)
    async with app.run_test(size=SMALL) as pilot:
        await sign_in(pilot, bob)
        table = app.screen.query_one("#pending", LiveTable)
        await wait_for(pilot, lambda: table.row_count == 2)
        await pilot.press("j")
        assert table.cursor_row == 1
        await pilot.press("k")
        assert table.cursor_row == 0


# -- 9. search: inside a replay, filters, statuses -------------------------------------


async def test_search_inside_a_replay_jumps_to_output_and_commands(
    services: GatewayServices,
) -> None:
    carol = add_person(services, "carol", "auditors")
    events = shell_events(30)
    events = sorted([*events, (15.2, "o", "\x1b[31mFATAL\x1b[0m: disk full\r\n")])
    record_session(services, "5ea4c4" + "0" * 26, "alice", events, started=STARTED)
    app = PamgateConsole(services)
    async with app.run_test(size=SMALL) as pilot:
        await sign_in(pilot, carol)
        screen = ReplayScreen("5ea4c4" + "0" * 26)
        app.push_screen(screen)
        await wait_for(pilot, lambda: screen.ready)
        await pilot.press("slash")
        field = screen.query_one("#search", Input)
        assert screen.focused is field
        await pilot.press(*"disk", "space", "left", "right", *"full")  # edit keys, not replay keys
        assert field.value == "disk full" and not screen.playing
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.ready and abs(screen.position - 15.2) < 0.01)
        assert "FATAL: disk full" in screen_text(screen)
        assert "1 match for 'disk full'" in str(screen.query_one("#replay-info").render())
        await pilot.press("n")  # nothing later: said, and the position stays
        await pilot.pause(0.2)
        assert "No more matches" in last_notification(app)
        assert abs(screen.position - 15.2) < 0.01


async def test_slash_filters_every_list(services: GatewayServices) -> None:
    root = add_person(services, "root-admin", "pamgate-admins")
    for user in ("alice", "bob", "carol"):
        open_live(services, user)
    app = PamgateConsole(services)
    async with app.run_test(size=SMALL) as pilot:
        await sign_in(pilot, root)
        await go(pilot, "2", SessionsScreen)
        table = app.screen.query_one("#live", LiveTable)
        await wait_for(pilot, lambda: table.row_count == 3)
        await pilot.press("slash", *"CAROL", "enter")
        assert [row[1] for row in rows(app, "#live")] == ["carol"]
        await pilot.pause(1.2)  # a refresh keeps the filter
        assert [row[1] for row in rows(app, "#live")] == ["carol"]
        assert app.screen.focused is table
        await pilot.press("slash", "ctrl+a", "ctrl+k", "enter")  # an empty filter: all again
        assert table.row_count == 3


def test_recording_filters_read_until_authority_and_breakglass() -> None:
    parsed = RecordingFilter.parse("until=2025-03-14 authority=grant:12 breakglass=no tar")
    now = datetime(2025, 3, 20, tzinfo=UTC)
    assert parsed.until_time(now) == datetime(2025, 3, 15, tzinfo=UTC)  # the whole day
    assert (parsed.authority_query(), parsed.breakglass, parsed.text) == ("grant:12", False, "tar")
    assert RecordingFilter.parse("breakglass=yes").authority_query() == "breakglass:"
    for bad in ("until=someday", "breakglass=maybe", "until="):
        with pytest.raises(ValueError):
            RecordingFilter.parse(bad)


async def test_recordings_filter_by_end_date_authority_and_breakglass_and_say_terminated(
    services: GatewayServices,
) -> None:
    carol = add_person(services, "carol", "auditors")
    day = 86400
    record_session(services, "a" * 32, "alice", shell_events(1), started=STARTED)
    record_session(services, "b" * 32, "bob", shell_events(1), started=STARTED + 2 * day,
                   authority="breakglass:3")  # fmt: skip
    record_session(services, "c" * 32, "carl", shell_events(1), started=STARTED + 3 * day,
                   authority="grant:12", status="interrupted", terminated_by="root-admin")
    app = PamgateConsole(services)
    async with app.run_test(size=LARGE) as pilot:
        await sign_in(pilot, carol)
        await go(pilot, "4", RecordingsScreen)
        screen = app.screen
        table = screen.query_one("#recordings", LiveTable)
        await wait_for(pilot, lambda: table.row_count == 3)
        assert rows(app, "#recordings")[0][7] == "terminated"

        async def only(line: str) -> list[str]:
            await pilot.press("slash")
            screen.query_one("#filter", Input).value = line
            await pilot.press("enter")
            await pilot.pause(0.3)
            await wait_for(pilot, lambda: "Searching" not in str(
                screen.query_one("#filter-status").render()))  # fmt: skip
            return [row[1] for row in rows(app, "#recordings")]

        assert await only("until=2025-03-15") == ["alice"]
        assert await only("authority=grant:12") == ["carl"]
        assert await only("breakglass=yes") == ["bob"]
        assert await only("breakglass=no") == ["carl", "alice"]


# -- 10. feedback ------------------------------------------------------------------------


async def test_the_watch_view_says_when_the_session_ended(services: GatewayServices) -> None:
    eve = add_person(services, "eve", "auditors")
    session_id = services.ledger.new_session_id()
    path = services.config.recordings_dir / "live" / f"{session_id}.cast"
    path.parent.mkdir(parents=True)
    path.write_text('{"version": 2, "width": 40, "height": 6, "timestamp": 0}\n'
                    '[0.1, "o", "$ make deploy\\r\\n"]\n')  # fmt: skip
    start = SessionStart(lane="human", user="alice", target="web01", account="root",
                         source="10.0.0.1", authority="policy:ops-web01", kind="shell")
    services.ledger.open(session_id, start, recording_path=f"live/{session_id}.cast")
    app = PamgateConsole(services)
    async with app.run_test(size=SMALL) as pilot:
        await sign_in(pilot, eve)
        await go(pilot, "2", SessionsScreen)
        await wait_for(pilot, lambda: len(rows(app, "#live")) == 1)
        await pilot.press("w")
        await wait_for(pilot, lambda: isinstance(app.screen, WatchScreen))
        watch = app.screen
        await wait_for(pilot, lambda: "make deploy" in screen_text(watch))
        services.ledger.close(session_id, start, SessionEnd(status="closed"))
        await wait_for(pilot, lambda: watch.ended, timeout=3)
        assert "has ended (closed)" in str(watch.query_one("#watch-status").render())
        assert "make deploy" in screen_text(watch)  # what it showed last stays


async def test_the_approve_dialog_shows_the_reason_and_the_grant_length(
    services: GatewayServices,
) -> None:
    bob = add_person(services, "bob", "approvers")
    request_for(services, "alice", "rotate the backup key before the audit on friday")
    app = PamgateConsole(services)
    async with app.run_test(size=SMALL) as pilot:
        await sign_in(pilot, bob)
        await wait_for(pilot, lambda: len(rows(app, "#pending")) == 1)
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, TextDialog))
        facts = " ".join(str(label.render()) for label in app.screen.query(".dialog-fact"))
        assert "rotate the backup key before the audit on friday" in facts
        assert "Grant length: 1 h" in facts  # the rule's default length


async def test_sign_in_says_a_code_works_once_and_names_a_back_off(
    tmp_path: Path,
) -> None:
    services = console_services(tmp_path, "")
    try:
        bob = add_person(services, "bob", "approvers")
        app = PamgateConsole(services)
        async with app.run_test(size=SMALL) as pilot:
            code = bob.code()
            await sign_in(pilot, bob, code=code)
            assert app.user is not None
            await pilot.press("ctrl+l")
            await wait_for(pilot, lambda: isinstance(app.screen, LoginScreen))
            await sign_in(pilot, bob, code=code)  # the same code again
            message = str(app.screen.query_one("#message").render())
            assert "A code works only once" in message
            for _ in range(12):  # until the back-off starts
                await sign_in(pilot, Person("bob", "wrong-password-xx", bob.secret))
                message = str(app.screen.query_one("#message").render())
                if "Too many failed sign-ins" in message:
                    break
            assert "try again in" in message
    finally:
        services.close()


async def test_the_no_console_role_message_is_shown_whole(services: GatewayServices) -> None:
    alice = add_person(services, "alice", "ops")
    app = PamgateConsole(services)
    async with app.run_test(size=SMALL) as pilot:
        await sign_in(pilot, alice)
        label = app.screen.query_one("#message", Label)
        await wait_for(pilot, lambda: "no console role" in str(label.render()))
        await pilot.pause(0.1)
        assert label.region.right <= SMALL[0]
        assert label.size.height >= 2  # wrapped, not cut at the edge


# -- contrast ------------------------------------------------------------------------------


def contrast(first: Color, second: Color) -> float:
    """WCAG contrast ratio of two colours as a 256-colour terminal shows them."""

    def luminance(colour: Color) -> float:
        triplet = colour.downgrade(ColorSystem.EIGHT_BIT).get_truecolor()

        def channel(value: int) -> float:
            scaled = value / 255
            return scaled / 12.92 if scaled <= 0.03928 else ((scaled + 0.055) / 1.055) ** 2.4

        red, green, blue = (channel(v) for v in (triplet.red, triplet.green, triplet.blue))
        return 0.2126 * red + 0.7152 * green + 0.0722 * blue

    high, low = sorted((luminance(first), luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)


async def test_error_text_and_the_highlighted_row_reach_4_5_to_1_in_256_colours(
    services: GatewayServices,
) -> None:
    bob = add_person(services, "bob", "approvers")
    request_for(services, "alice")
    app = PamgateConsole(services)
    async with app.run_test(size=SMALL) as pilot:
        await sign_in(pilot, bob, code="000000")  # a refusal: error text on the login screen
        message = app.screen.query_one("#message", Label)
        error = message.rich_style
        assert error.color is not None and error.bgcolor is not None
        assert contrast(error.color, error.bgcolor) >= 4.5
        await sign_in(pilot, bob)
        table = app.screen.query_one("#pending", LiveTable)
        await wait_for(pilot, lambda: table.row_count == 1)
        table.focus()
        await pilot.pause(0.1)
        cursor = table.get_component_rich_style("datatable--cursor")
        assert cursor.color is not None and cursor.bgcolor is not None
        assert contrast(cursor.color, cursor.bgcolor) >= 4.5
