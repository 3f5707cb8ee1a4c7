"""Shared helpers for the console tests: a gateway data directory with users, and sign-in."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pyotp
from rich.cells import cell_len
from textual.css.query import NoMatches
from textual.pilot import Pilot
from textual.widgets import Button, DataTable, Input

from gateway.config import load_config
from gateway.datadir import initialize
from gateway.services import GatewayServices
from tui.app import PamgateConsole

CONFIG = """
[gateway]
name = "console-test"
data_dir = "data"

[auth]
failure_delay_seconds = 0.01

[console]
approver_groups = ["approvers"]
auditor_groups = ["auditors"]
admin_groups = ["pamgate-admins"]

[[targets]]
name = "web01"
host = "127.0.0.1"
port = 1
accounts = ["root"]
host_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFmTjzR9GHjvjKJTd3OAMN9YLhGXgOG7r3DujrQ3pqVP"]

[[rules]]
id = "ops-web01"
groups = ["ops"]
targets = ["web01"]
mode = "approval"
approver_groups = ["approvers"]
break_glass = true
"""


@dataclass
class Person:
    name: str
    password: str
    secret: str

    def code(self) -> str:
        """A TOTP code not used yet (each code works once per user)."""
        self._step = getattr(self, "_step", 0) + 1
        return pyotp.TOTP(self.secret).at(time.time() + 30 * (self._step - 1))


def console_services(root: Path, extra_config: str = "") -> GatewayServices:
    """Services over a fresh data directory (no gateway process needed)."""
    config_path = root / "pamgate.toml"
    config_path.write_text(CONFIG + extra_config)
    config = load_config(config_path)
    initialize(config)
    return GatewayServices.open(config)


def add_person(services: GatewayServices, name: str, *groups: str) -> Person:
    password = f"pw-{name}-long-enough"
    enrolment = services.users.add_user(name, actor="tests", groups=groups, password=password)
    return Person(name, password, enrolment.secret)


async def sign_in(pilot: Pilot, person: Person, *, code: str | None = None) -> None:
    """Fill in the login screen's three factors, press Enter, wait for the outcome."""
    await wait_for(pilot, lambda: bool(pilot.app.screen.query("#sign-in")))
    screen = pilot.app.screen
    screen.query_one("#user", Input).value = person.name
    screen.query_one("#password", Input).value = person.password
    code_field = screen.query_one("#code", Input)
    code_field.value = code or person.code()
    code_field.focus()
    button = screen.query_one("#sign-in", Button)
    await pilot.press("enter")
    await wait_for(pilot, lambda: pilot.app.user is not None or not button.disabled)


async def wait_for(pilot: Pilot, condition, timeout: float = 10.0) -> None:  # noqa: ANN001
    """Let the app run until ``condition()`` holds (workers and refreshes included).

    A widget the condition looks for that is not mounted yet (the next screen
    still composing, on a busy machine) counts as "not yet".
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except NoMatches:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.05)


def rows(app: PamgateConsole, table_id: str) -> list[list[str]]:
    table = app.screen.query_one(table_id, DataTable)
    return [[str(value) for value in table.get_row_at(i)] for i in range(table.row_count)]


def table_shows(app: PamgateConsole, table_id: str, count: int) -> bool:
    """The table has ``count`` rows and has sized its automatic columns to them.

    DataTable widens automatic columns only when idle: on a busy machine a
    screenshot taken as soon as the rows are in shows them cut at header width.
    """
    shown = rows(app, table_id)
    if len(shown) != count:
        return False
    columns = app.screen.query_one(table_id, DataTable).ordered_columns
    return all(
        column.content_width >= max((cell_len(row[index]) for row in shown), default=0)
        for index, column in enumerate(columns)
        if column.auto_width
    )


def last_notification(app: PamgateConsole) -> str:
    notes = list(app._notifications)
    return str(notes[-1].message) if notes else ""


def record_session(
    services: GatewayServices,
    session_id: str,
    user: str,
    events: list[tuple[float, str, str]],
    *,
    started: float,
    width: int = 80,
    height: int = 24,
    kind: str = "shell",
    authority: str = "rule:ops-web01",
    status: str = "closed",
    terminated_by: str | None = None,
) -> Path:
    """Write, seal, enter in the ledger (opened at ``started``, a UNIX time) and index an
    asciicast recording, as the gateway does after a session; its path."""
    import json

    from gateway.domain.sessions import SessionEnd, SessionLedger, SessionStart
    from recordings.asciicast import seal_file

    relative = f"2025/03/14/{session_id}.cast"
    path = services.config.recordings_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"version": 2, "width": width, "height": height, "timestamp": int(started),
              "env": {"TERM": "xterm-256color", "SHELL": ""}, "pamgate": {"user": user}}
    path.write_text("\n".join(json.dumps(line) for line in [header, *events]) + "\n")
    sealed = seal_file(path)
    ledger = SessionLedger(services.store, services.audit, "console-test", clock=lambda: started)
    start = SessionStart(lane="human", user=user, target="web01", account="root",
                         source="192.0.2.7", authority=authority, kind=kind,
                         command="backup.sh" if kind == "exec" else None)
    ledger.open(session_id, start, recording_path=relative)
    if terminated_by is not None:
        ledger.request_termination(session_id, actor=terminated_by, reason="policy breach")
    ledger.close(session_id, start, SessionEnd(
        status=status, recording_path=relative, recording_sha256=sealed.sha256))
    services.recordings.index_commands(session_id)
    return sealed.path
