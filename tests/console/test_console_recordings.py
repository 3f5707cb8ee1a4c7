"""Console Recordings section and replayer, on recordings written here (no SSH needed).

Each recorded session is an asciicast file written directly under the
recordings folder, sealed with ``seal_file`` and entered in the ledger as a
closed session, then indexed like the gateway does after a session.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyte
import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from gateway.domain.audit.trail import Trail
from gateway.domain.sessions import SessionEnd, SessionLedger, SessionStart
from gateway.services import GatewayServices
from recordings.asciicast import seal_file
from tests.support.console import Person, add_person, console_services, sign_in, wait_for
from tui.app import PamgateConsole
from tui.screens.recordings import RecordingFilter, RecordingsScreen
from tui.screens.replay import ReplayScreen, command_moment
from tui.widgets import TerminalImage, TerminalView, safe_cell

#: Sessions start at this fixed time, so nothing shown depends on the clock.
STARTED = datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)
ALICE_SESSION = "a11ce" + "0" * 27
BOB_SESSION = "b0b" + "1" * 29
HOSTILE_SESSION = "bad" + "2" * 29
PROMPT = "\x1b[1;32muser@web01\x1b[0m:\x1b[1;34m~\x1b[0m$ "

Event = tuple[float, str, str]


def shell(commands: list[tuple[float, str, str]]) -> list[Event]:
    """A shell session: a prompt, then each (time, line, output) typed and answered."""
    events: list[Event] = [(0.2, "o", PROMPT)]
    for at, line, output in commands:
        for number, char in enumerate(line):
            events += [(at + 0.1 * number, "i", char), (at + 0.1 * number + 0.01, "o", char)]
        enter = round(at + 0.1 * len(line), 3)
        events += [(enter, "i", "\r"), (enter + 0.01, "o", "\r\n" + output + PROMPT)]
    return events


def record(
    services: GatewayServices,
    session_id: str,
    user: str,
    events: list[Event],
    *,
    width: int = 60,
    height: int = 12,
    authority: str = "rule:ops-web01",
) -> Path:
    """Write, seal, enter in the ledger and index a shell session's recording."""
    relative = f"2025/03/14/{session_id}.cast"
    path = services.config.recordings_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {
        "version": 2, "width": width, "height": height, "timestamp": int(STARTED.timestamp()),
        "env": {"TERM": "xterm-256color", "SHELL": ""}, "pamgate": {"user": user},
    }  # fmt: skip
    path.write_text("\n".join(json.dumps(line) for line in [header, *events]) + "\n")
    sealed = seal_file(path)
    ledger = SessionLedger(
        services.store, services.audit, "console-test", clock=lambda: STARTED.timestamp()
    )
    start = SessionStart(lane="human", user=user, target="web01", account="root",
                         source="192.0.2.7", authority=authority, kind="shell")  # fmt: skip
    ledger.open(session_id, start, recording_path=relative)
    ledger.close(
        session_id,
        start,
        SessionEnd(status="closed", recording_path=relative, recording_sha256=sealed.sha256),
    )
    services.recordings.index_commands(session_id)
    return sealed.path


ALICE_EVENTS = shell(
    [
        (1.0, "ls /etc", "hosts  passwd  \x1b[1;31mshadow\x1b[0m\r\n"),
        (12.0, "uptime", " 09:27:05 up 3 days,  load average: 0.01\r\n"),
        (20.0, "cat notes.txt", "\x1b[7mremember:\x1b[0m rotate the keys\r\n"),
    ]
)
BOB_EVENTS = shell([(2.0, "sudo cat /etc/shadow", "root:*:19000:0:99999:7:::\r\n")])
HOSTILE_OUTPUT = (
    "\x1b]52;c;SGVsbG8=\x07",  # write the auditor's clipboard
    "\x1b]0;pwned\x07",  # set the window title
    "\x1b[6n",  # ask for the cursor position (the terminal would answer as typed input)
    "\x1bP+q\x1b\\",  # DCS: request terminfo capabilities
    "\x1b[?1000h",  # mouse reporting on
    "\x1b]8;;https://evil.example/\x07link\x1b]8;;\x07",  # a hyperlink
    "\x9b31m\x85\x07\x00\x7f",  # C1 CSI, NEL, BEL, NUL, DEL
    "\u202egnp.exe\u202c",  # right-to-left override
)


@pytest.fixture()
def services(tmp_path: Path) -> Iterator[GatewayServices]:
    opened = console_services(tmp_path)
    yield opened
    opened.store.dispose()


@pytest.fixture()
def auditor(services: GatewayServices) -> Person:
    return add_person(services, "carol", "auditors")


def replay_text(screen: ReplayScreen) -> str:
    """Every character the terminal view would draw, scrolled or not."""
    return screen.query_one("#terminal", TerminalView).image.text


async def open_section(pilot: Pilot, person: Person) -> RecordingsScreen:
    await sign_in(pilot, person)
    await pilot.press("4")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, RecordingsScreen))
    return pilot.app.screen  # type: ignore[return-value]


async def filter_by(pilot: Pilot, screen: RecordingsScreen, line: str, rows: int) -> DataTable:
    """Focus the filter with "/", enter ``line`` and wait for ``rows`` rows."""
    await pilot.press("slash")
    field = screen.query_one("#filter", Input)
    assert screen.focused is field
    field.value = line  # typing every key is slow; one test types for real
    await pilot.press("enter")
    table = screen.query_one("#recordings", DataTable)
    await wait_for(pilot, lambda: table.row_count == rows and "Searching" not in status(screen))
    return table


def status(screen: RecordingsScreen) -> str:
    return str(screen.query_one("#filter-status", Static).render())


async def open_replay(pilot: Pilot, screen: ReplayScreen) -> ReplayScreen:
    pilot.app.push_screen(screen)
    await wait_for(pilot, lambda: screen.ready)
    return screen


async def settle(pilot: Pilot, screen: ReplayScreen) -> None:
    await pilot.pause()
    await wait_for(pilot, lambda: screen.ready)


# -- the Recordings section --------------------------------------------------------


async def test_filter_by_user_and_by_command_text(
    services: GatewayServices, auditor: Person
) -> None:
    record(services, ALICE_SESSION, "alice", ALICE_EVENTS)
    record(services, BOB_SESSION, "bob", BOB_EVENTS)
    async with PamgateConsole(services).run_test(size=(120, 30)) as pilot:
        screen = await open_section(pilot, auditor)
        table = screen.query_one("#recordings", DataTable)
        await wait_for(pilot, lambda: table.row_count == 2)
        assert "2 recorded sessions" in status(screen)

        await filter_by(pilot, screen, "user=bob", 1)
        assert [str(c) for c in table.get_row_at(0)[:3]] == [BOB_SESSION[:12], "bob", "web01"]

        # Free words are command text: each matching command is a row, with its time.
        table = await filter_by(pilot, screen, "shadow", 1)
        session, at, command, user = (str(c) for c in table.get_row_at(0)[:4])
        assert (session, at, command, user) == (BOB_SESSION[:12], "00:04", "sudo cat /etc/shadow",
                                                "bob")  # fmt: skip
        assert "1 command matching 'shadow' in 1 session" in status(screen)
        await filter_by(pilot, screen, "user=alice shadow", 0)
        await filter_by(pilot, screen, "target=web01 since=2025-03-01 e", 4)
        await filter_by(pilot, screen, "since=2999-01-01", 0)
        await filter_by(pilot, screen, "user=alice", 1)

        # A filter it cannot read is explained, and the table keeps what it showed.
        await pilot.press("slash", "ctrl+a", "ctrl+k", *"since=soon", "enter")
        assert screen.query_one("#filter", Input).value == "since=soon"
        await wait_for(pilot, lambda: "give an age" in status(screen))
        await pilot.pause(1.2)  # a refresh in between keeps the explanation
        assert "give an age" in status(screen) and table.row_count == 1
        await filter_by(pilot, screen, "[/bold] [red]", 0)  # literal text, not markup
        assert "matching '[/bold] [red]'" in status(screen)
        await filter_by(pilot, screen, "", 2)
        assert status(screen) == "2 recorded sessions"


async def test_break_glass_sessions_stand_out(services: GatewayServices, auditor: Person) -> None:
    record(services, ALICE_SESSION, "alice", ALICE_EVENTS, authority="breakglass:7")
    record(services, BOB_SESSION, "bob", BOB_EVENTS)
    async with PamgateConsole(services).run_test(size=(120, 30)) as pilot:
        screen = await open_section(pilot, auditor)
        table = screen.query_one("#recordings", DataTable)
        await wait_for(pilot, lambda: table.row_count == 2)
        kinds = {str(table.get_row_at(n)[1]): str(table.get_row_at(n)[5]) for n in range(2)}
        assert kinds == {"alice": "shell break-glass", "bob": "shell"}


def test_filter_line_is_parsed() -> None:
    parsed = RecordingFilter.parse("rm  user=alice -rf since=2d PATH=/tmp")
    assert (parsed.user, parsed.target, parsed.since) == ("alice", None, "2d")
    assert parsed.text == "rm -rf PATH=/tmp"
    assert RecordingFilter.parse("").text == ""
    for bad in ("since=yesterday", "user=", "since=99999999999d", "since=2025-13-01"):
        with pytest.raises(ValueError):
            RecordingFilter.parse(bad)


async def test_opening_a_recording_is_audited(services: GatewayServices, auditor: Person) -> None:
    record(services, ALICE_SESSION, "alice", ALICE_EVENTS)
    async with PamgateConsole(services).run_test(size=(100, 30)) as pilot:
        screen = await open_section(pilot, auditor)
        table = screen.query_one("#recordings", DataTable)
        await wait_for(pilot, lambda: table.row_count == 1)
        await pilot.press("o")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ReplayScreen))
        replay = pilot.app.screen
        assert isinstance(replay, ReplayScreen)
        await wait_for(pilot, lambda: replay.ready)
        events = [e for e in services.audit.events(Trail.HUMAN) if e.action == "recording.replayed"]
        assert [(e.actor, e.session_id) for e in events] == [("carol", ALICE_SESSION)]
        assert replay.position == 0.0 and not replay_text(replay).strip()  # before the prompt
        await pilot.press("right")
        await settle(pilot, replay)
        assert "user@web01:~$ ls /etc" in replay_text(replay)
        await pilot.press("escape")
        await wait_for(pilot, lambda: pilot.app.screen is screen)


async def test_opening_a_command_match_starts_at_that_command(
    services: GatewayServices, auditor: Person
) -> None:
    record(services, ALICE_SESSION, "alice", ALICE_EVENTS)
    async with PamgateConsole(services).run_test(size=(100, 30)) as pilot:
        screen = await open_section(pilot, auditor)
        await filter_by(pilot, screen, "uptime", 1)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ReplayScreen))
        replay = pilot.app.screen
        assert isinstance(replay, ReplayScreen)
        await wait_for(pilot, lambda: replay.ready)
        uptime = services.recordings.commands(ALICE_SESSION)[1]
        assert replay.position == pytest.approx(command_moment(uptime.offset))
        text = replay_text(replay)
        assert "$ uptime" in text and "load average" not in text


async def test_approver_sees_the_missing_role_message(services: GatewayServices) -> None:
    record(services, ALICE_SESSION, "alice", ALICE_EVENTS)
    approver = add_person(services, "dave", "approvers")
    async with PamgateConsole(services).run_test(size=(100, 30)) as pilot:
        await sign_in(pilot, approver)
        await pilot.press("4")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, RecordingsScreen))
        message = str(pilot.app.screen.query_one(".missing-role", Static).render())
        assert message == (
            "You need the admin or auditor role to see recordings. You are dave (approver)."
        )
        assert not pilot.app.screen.query("#recordings")
        # Pushed from elsewhere, the replayer refuses the same way and opens nothing.
        replay = ReplayScreen(ALICE_SESSION)
        pilot.app.push_screen(replay)
        await pilot.pause(0.3)
        assert "to replay recordings" in str(replay.query_one(".missing-role", Static).render())
        assert not [e for e in services.audit.events(Trail.HUMAN) if e.action.startswith("rec")]


# -- the replayer ----------------------------------------------------------------------


async def test_seek_and_jump_to_a_command(services: GatewayServices, auditor: Person) -> None:
    record(services, ALICE_SESSION, "alice", ALICE_EVENTS)
    async with PamgateConsole(services).run_test(size=(100, 30)) as pilot:
        await sign_in(pilot, auditor)
        replay = await open_replay(pilot, ReplayScreen(ALICE_SESSION))
        at_start = replay_text(replay)
        assert "ls /etc" not in at_start

        await pilot.press("end")
        await settle(pilot, replay)
        assert replay.position == pytest.approx(replay.duration)
        assert "rotate the keys" in replay_text(replay)

        await pilot.press("home", "right")
        await settle(pilot, replay)
        assert replay.position == 5.0
        assert "shadow" in replay_text(replay) and "uptime" not in replay_text(replay)

        # Selecting the third command shows its line typed, before its output.
        commands = replay.query_one("#commands", DataTable)
        assert [str(commands.get_row_at(n)[1]) for n in range(3)] == [
            "ls /etc", "uptime", "cat notes.txt"
        ]  # fmt: skip
        commands.move_cursor(row=2)
        await pilot.press("enter")
        await settle(pilot, replay)
        text = replay_text(replay)
        assert "$ cat notes.txt" in text and "rotate the keys" not in text

        # n / p step through the commands.
        await pilot.press("p")
        await settle(pilot, replay)
        assert "$ uptime" in replay_text(replay) and "load average" not in replay_text(replay)
        await pilot.press("left")
        await settle(pilot, replay)
        uptime = services.recordings.commands(ALICE_SESSION)[1]
        assert replay.position == pytest.approx(command_moment(uptime.offset) - 5)

        # A click on the timeline's last cell seeks to the end.
        timeline = replay.query_one("#timeline")
        await pilot.click("#timeline", offset=(timeline.outer_size.width - 2, 0))
        await settle(pilot, replay)
        assert replay.position == pytest.approx(replay.duration)


async def test_play_moves_the_screen_forward(services: GatewayServices, auditor: Person) -> None:
    record(services, ALICE_SESSION, "alice", ALICE_EVENTS)
    async with PamgateConsole(services).run_test(size=(100, 30)) as pilot:
        await sign_in(pilot, auditor)
        replay = await open_replay(pilot, ReplayScreen(ALICE_SESSION))
        await pilot.press("plus", "plus", "plus", "plus", "plus", "plus")
        assert replay.speed == 16.0
        await pilot.press("space")
        assert replay.playing
        await wait_for(pilot, lambda: "hosts  passwd" in replay_text(replay))
        await wait_for(pilot, lambda: not replay.playing, timeout=15)  # stops at the end
        assert "rotate the keys" in replay_text(replay)
        await pilot.press("minus")
        assert replay.speed == 8.0


async def test_hostile_output_never_leaves_the_terminal_view(
    services: GatewayServices, auditor: Person
) -> None:
    events = shell([(1.0, "cat evil", "")])
    # One event each: pyte stops drawing a chunk at the first character it cannot print.
    events += [(2.0 + n / 10, "o", output) for n, output in enumerate(HOSTILE_OUTPUT)]
    events += [(3.0, "o", "".join(HOSTILE_OUTPUT) + "\r\n"), (3.5, "o", "after\r\n")]
    record(services, HOSTILE_SESSION, "mallory", events)
    async with PamgateConsole(services).run_test(size=(100, 30)) as pilot:
        await sign_in(pilot, auditor)
        replay = await open_replay(pilot, ReplayScreen(HOSTILE_SESSION))
        await pilot.press("end")
        await settle(pilot, replay)
        view = replay.query_one("#terminal", TerminalView)
        assert "after" in view.image.text
        # What the widget hands to Textual: the stored rows and the rendered (cropped) lines.
        drawn = [strip.text for strip in view.image.lines]
        drawn += [view.render_line(y).text for y in range(view.size.height)]
        for line in drawn:
            assert all(unicodedata.category(c) not in ("Cc", "Cf") for c in line), repr(line)
            for needle in ("pwned", "SGVsbG8", "evil.example", *HOSTILE_OUTPUT):
                assert needle not in line
        assert pilot.app.title == "pamgate console"
        shot = pilot.app.export_screenshot()
        assert "after" in shot and "pwned" not in shot and "SGVsbG8" not in shot


def test_terminal_image_drops_controls_found_in_cells() -> None:
    """Even if the emulator left a control in a cell, it is not drawn."""
    screen = pyte.Screen(10, 2)
    pyte.Stream(screen).feed("ok")
    screen.buffer[1][0] = screen.buffer[1][0]._replace(data="\x1b]52;c;SGVsbG8=\x07")
    screen.buffer[1][1] = screen.buffer[1][1]._replace(data="\x9b", fg="red", reverse=True)
    image = TerminalImage.of(screen, show_cursor=False)
    assert image.text.splitlines() == ["ok        ", " " * 10]
    assert all(strip.cell_length == 10 for strip in image.lines)
    assert safe_cell("e\u0301") == "e\u0301"  # an accent stays with its letter
    assert safe_cell("a\x1b") == safe_cell("\u202e") == safe_cell("\u0301") == " "
    assert safe_cell("\u202ex") == "x" and safe_cell("ab") == "a"


async def test_a_tampered_recording_is_not_shown(
    services: GatewayServices, auditor: Person
) -> None:
    path = record(services, ALICE_SESSION, "alice", ALICE_EVENTS)
    path.chmod(0o644)
    path.write_text(path.read_text().replace("rotate", "ignore"))
    async with PamgateConsole(services).run_test(size=(100, 30)) as pilot:
        await sign_in(pilot, auditor)
        replay = ReplayScreen(ALICE_SESSION)
        pilot.app.push_screen(replay)
        await wait_for(pilot, lambda: pilot.app.screen is replay and replay.is_mounted)
        problem = replay.query_one("#replay-problem", Static)
        await wait_for(pilot, lambda: "fails verification" in str(problem.render()))
        assert replay_text(replay) == ""
        # The refusal is audited, with the auditor and the reason; nothing was shown.
        events = [e for e in services.audit.events(Trail.HUMAN) if e.action.startswith("rec")]
        assert [(e.action, e.outcome) for e in events] == [("recording.replayed", "failure")]
        assert "fails verification" in events[0].reason


def test_replay_screen_snapshot(
    snap_compare: Callable[..., bool], services: GatewayServices, auditor: Person
) -> None:
    """The replayer at 80x24, paused on the second command: terminal, commands, timeline."""
    record(services, ALICE_SESSION, "alice", ALICE_EVENTS)
    app = PamgateConsole(services)

    async def run_before(pilot: Pilot) -> None:
        await sign_in(pilot, auditor)
        uptime = services.recordings.commands(ALICE_SESSION)[1]
        await open_replay(pilot, ReplayScreen(ALICE_SESSION, at=uptime.offset + 0.5))

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
