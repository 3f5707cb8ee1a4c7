"""Connection limits like sshd's, on a gateway with small ones: unauthenticated connections
(``max_startups``, ``per_source_max_startups``), ``login_grace_time_seconds``, ``max_sessions``,
and the open-files limit ``pamgate serve`` raises at start.

The 1,000-idle-connections figure (default limits) is tests/reliability/test_login_flood.py.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from gateway.domain.audit.trail import Trail
from gateway.ssh.server_connection import REFUSED_LINE
from tests.support import interop_clients as clients
from tests.support.gateway import Gateway, current_code, launch_gateway
from tests.support.hostile import close_all, first_line, hostile_login, open_idle

pytestmark = pytest.mark.openssh

LIMITS = """
max_startups = "20:50:30"
per_source_max_startups = 5
login_grace_time_seconds = 4
max_sessions = 3
"""
#: The soft open-files limit the gateway is started with (its hard limit stays).
STARTING_OPEN_FILES = 256


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with launch_gateway(
        tmp_path_factory.mktemp("limited"), human_listener=LIMITS, open_files=STARTING_OPEN_FILES
    ) as running:
        yield running


def admitted(opened: list[tuple[object, bytes]]) -> int:
    return sum(line.startswith(b"SSH-2.0-") for _, line in opened)


def test_one_source_gets_at_most_its_share_of_unauthenticated_slots(limited: Gateway) -> None:
    hog = open_idle(limited.port, "127.0.13.1", 8)
    try:
        assert admitted(hog) == 5  # per_source_max_startups
        refused = [line for _, line in hog if not line.startswith(b"SSH-2.0-")]
        assert refused == [REFUSED_LINE] * 3
        # Someone else still gets in, and signs in, meanwhile.
        user = limited.make_user()
        result = limited.run_ssh(user, "web01", "echo in", source="127.0.13.2")
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"in\n"
    finally:
        close_all(hog)
    assert "dropped a new connection from 127.0.13.1" in limited.log_text()


def test_unauthenticated_connections_past_start_are_dropped_at_random(limited: Gateway) -> None:
    """max_startups 20:50:30: none dropped below 20, never more than 30 held."""
    opened = []
    try:
        for source in range(10):  # 5 from each of 10 addresses: the per-source cap is not hit
            opened += open_idle(limited.port, f"127.0.14.{source + 1}", 5)
        held = admitted(opened)
        assert 20 <= held <= 30, held
        assert held < 50
    finally:
        close_all(opened)
    # Slots come back as connections close: a sign-in works at once.
    time.sleep(0.5)
    user = limited.make_user()
    assert limited.run_ssh(user, "web01", "true", source="127.0.14.99").returncode == 0


async def test_login_grace_time_ends_idle_and_unfinished_connections(limited: Gateway) -> None:
    idle = open_idle(limited.port, "127.0.13.20", 1, timeout=30)
    sock, banner = idle[0]
    assert banner.startswith(b"SSH-2.0-")
    started = time.monotonic()
    try:
        assert first_line(sock) == b""  # closed by the gateway: login_grace_time_seconds = 4
    finally:
        close_all(idle)
    assert time.monotonic() - started < 25  # the default (60 s) would run past this
    user = limited.make_user()
    transcript = await hostile_login(
        limited.port, f"{user.name}:web01", {"Password": ["<hang>"]}, source="127.0.13.21"
    )
    assert transcript.outcome.startswith("disconnected"), transcript
    deadline = time.monotonic() + 10
    reasons: list[str] = []
    while not reasons and time.monotonic() < deadline:
        reasons = [r.reason for r in limited.audit.events(Trail.HUMAN)
                   if r.action == "auth.failure" and r.actor == user.name]  # fmt: skip
        time.sleep(0.1)
    assert reasons == ["abandoned at the password prompt (login timeout)"]


async def test_sessions_per_connection_are_limited(limited: Gateway) -> None:
    user = limited.make_user()
    async with clients.asyncssh_connect(
        limited.port, f"{user.name}:web01", password=user.password,
        code=lambda: current_code(user), source="127.0.13.30",
    ) as conn:  # fmt: skip
        running = [await conn.create_process("sleep 30") for _ in range(3)]
        with pytest.raises(asyncssh.ChannelOpenError, match=r"too many sessions.*max_sessions = 3"):
            await conn.create_process("echo fourth")
        running[0].close()
        await running[0].wait_closed()
        # A slot came back: the next session opens.
        fourth = await conn.run("echo fourth", check=True)
        assert fourth.stdout == "fourth\n"
        for process in running[1:]:
            process.close()
    refusals = [json.loads(r.details) for r in limited.audit.events(Trail.HUMAN)
                if r.action == "channel.refused" and r.actor == user.name]  # fmt: skip
    assert refusals and refusals[0]["kind"] == "session"


def test_serve_raises_the_open_files_limit_and_logs_it(limited: Gateway) -> None:
    limits = Path(f"/proc/{limited.process.pid}/limits").read_text()
    soft, hard = re.search(r"Max open files\s+(\d+)\s+(\d+)", limits).groups()  # type: ignore[union-attr]
    assert int(soft) == int(hard) > STARTING_OPEN_FILES
    assert f"open files: soft limit raised from {STARTING_OPEN_FILES} to {hard}" in (
        limited.log_text()
    )
