"""An authenticated connection is not a standing decision: every channel is decided anew,
live access ends when what allowed it ends, and every session that starts ends.

Stock ``ssh`` with ControlMaster (as Ansible multiplexes) and a raw asyncssh client
against the real gateway and a real sshd target.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from gateway.domain.audit.trail import Trail
from gateway.services import GatewayServices
from tests.support.clients import connect_as, control_master
from tests.support.gateway import Gateway, TestUser

pytestmark = pytest.mark.openssh


def events(gateway: Gateway, user: TestUser, action: str) -> list[dict[str, Any]]:
    return [
        {**json.loads(r.details), "reason": r.reason, "session": r.session_id}
        for r in gateway.audit.events(Trail.HUMAN)
        if r.actor == user.name and r.action == action
    ]


def wait_for_events(
    gateway: Gateway, user: TestUser, action: str, count: int, timeout: float = 30
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = events(gateway, user, action)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_every_multiplexed_command_gets_its_exit_status(gateway: Gateway, tmp_path: Path) -> None:
    user = gateway.make_user()
    with control_master(gateway, user, "web01", tmp_path) as ssh:

        def run(index: int) -> int:
            done = subprocess.run(
                [*ssh, f"exit {index % 7}"], stdin=subprocess.DEVNULL, capture_output=True,
                timeout=60,
            )  # fmt: skip
            return done.returncode

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(run, range(200)))
    assert codes == [index % 7 for index in range(200)]
    ends = wait_for_events(gateway, user, "session.end", 200)
    assert Counter(end["exit_status"] for end in ends) == Counter(i % 7 for i in range(200))


def test_a_disabled_user_gets_no_new_channel_and_loses_the_live_one(
    gateway: Gateway, tmp_path: Path
) -> None:
    user = gateway.make_user()
    with control_master(gateway, user, "web01", tmp_path) as ssh:
        live = subprocess.Popen(
            [*ssh, "echo started; sleep 60"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        assert live.stdout is not None and live.stdout.readline() == b"started\n"
        assert gateway.cli("user", "disable", user.name).returncode == 0
        disabled_at = time.monotonic()
        _, stderr = live.communicate(timeout=10)
        assert time.monotonic() - disabled_at < 4
        assert live.returncode == 255
        assert f"user {user.name} was disabled; the session was closed".encode() in stderr
        marker = Path(f"/tmp/pamgate-test-disabled-{user.name}")  # the target runs on this host
        refused = subprocess.run(
            [*ssh, f"touch {marker}; id"], stdin=subprocess.DEVNULL, capture_output=True,
            timeout=30,
        )  # fmt: skip
    assert refused.returncode == 255 and refused.stdout == b""
    assert not marker.exists(), "nothing ran on the target"
    assert f"user {user.name} is disabled".encode() in refused.stderr
    assert any(f"user {user.name} is disabled" in e["reason"]
               for e in events(gateway, user, "access.refused"))  # fmt: skip


def test_a_group_change_ends_live_sessions_the_policy_no_longer_allows(
    gateway: Gateway, tmp_path: Path
) -> None:
    user = gateway.make_user(groups=("admins",))
    with control_master(gateway, user, "web01", tmp_path) as ssh:
        live = subprocess.Popen(
            [*ssh, "echo started; sleep 60"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        assert live.stdout is not None and live.stdout.readline() == b"started\n"
        assert gateway.cli("user", "set-groups", user.name, "--group", "nobody").returncode == 0
        changed_at = time.monotonic()
        _, stderr = live.communicate(timeout=10)
        assert time.monotonic() - changed_at < 4
        assert live.returncode == 255
        assert b"access is no longer allowed" in stderr
        refused = subprocess.run([*ssh, "id"], stdin=subprocess.DEVNULL, capture_output=True,
                                 timeout=30)  # fmt: skip
    assert refused.returncode == 255 and b"not permitted" in refused.stderr
    ended = wait_for_events(gateway, user, "session.end", 1)
    assert ended and "access is no longer allowed" in ended[0]["reason"]


async def _open_and_drop(gateway: Gateway, user: TestUser, rounds: int, seed: int) -> None:
    """Open session channels and close each at a random point of its setup."""
    chooser = random.Random(seed)
    async with connect_as(gateway, user, "web01") as conn:
        for _ in range(rounds):
            chan, _session = await conn.create_session(
                asyncssh.SSHClientSession, "cat", encoding=None
            )
            await asyncio.sleep(chooser.choice([0, 0, 0.001, 0.005, 0.02, 0.05, 0.1, 0.3]))
            chan.close()
        await asyncio.sleep(0.5)


def open_descriptors(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def test_every_session_that_starts_ends_whenever_the_client_drops_it(
    gateway: Gateway, services: GatewayServices
) -> None:
    user = gateway.make_user()
    before = open_descriptors(gateway.process.pid)
    asyncio.run(_open_and_drop(gateway, user, 100, seed=19))
    deadline = time.monotonic() + 30
    while True:
        starts = events(gateway, user, "session.start")
        ends = events(gateway, user, "session.end")
        if len(ends) >= len(starts) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert starts, "some channels got as far as a session"
    assert sorted(e["session"] for e in ends) == sorted(s["session"] for s in starts)
    assert all(end["recording_sha256"] for end in ends), "every recording was sealed"
    assert not [s for s in services.ledger.live() if s.user == user.name]
    # Descriptors come back (a little slack for the log file and the database pool).
    assert open_descriptors(gateway.process.pid) <= before + 5
