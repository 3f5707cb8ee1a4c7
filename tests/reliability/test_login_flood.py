"""Floods on the login path, default connection limits: does a legitimate sign-in still get in,
and how long does it take? (Figures, not timing asserts.)

- Idle unauthenticated connections (CI: 300, full: 1,000), ten per address from many
  addresses, held open while a person signs in with the stock ssh client. The gateway starts
  with an open-files soft limit of 256 (below the connections held), as under a tight
  systemd default, and must raise it itself.
- Connections that answer ``Password:`` and restart keyboard-interactive instead of giving
  the code (CI: 40, full: 100), each from its own address, all at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.gateway import Gateway, launch_gateway
from tests.support.hostile import close_all, hostile_login, open_idle
from tests.support.reliability import SIZE, gateway_rss_kib

pytestmark = [pytest.mark.reliability, pytest.mark.openssh]

PER_ADDRESS = 10  # below per_source_max_startups (20): the global limit is what is measured


@pytest.fixture(scope="module")
def flooded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with launch_gateway(tmp_path_factory.mktemp("flooded"), open_files=256) as running:
        yield running


def test_idle_unauthenticated_connections_keep_nobody_out(
    flooded: Gateway, figures: dict[str, Any]
) -> None:
    baseline_user = flooded.make_user()
    baseline_started = time.monotonic()
    assert flooded.run_ssh(baseline_user, "web01", "echo in", source="127.22.0.2").returncode == 0
    baseline_seconds = time.monotonic() - baseline_started
    rss_before = gateway_rss_kib(flooded)
    opened = []
    started = time.monotonic()
    try:
        for index in range(SIZE.idle_connections // PER_ADDRESS):
            source = f"127.21.{index // 250}.{index % 250 + 1}"
            opened += open_idle(flooded.port, source, PER_ADDRESS)
        opening_seconds = time.monotonic() - started
        held = sum(line.startswith(b"SSH-2.0-") for _, line in opened)
        assert held == SIZE.idle_connections  # all below max_startups' start (1200)
        user = flooded.make_user()
        login_started = time.monotonic()
        result = flooded.run_ssh(user, "web01", "echo in", source="127.22.0.1")
        login_seconds = time.monotonic() - login_started
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"in\n"
        rss_held = gateway_rss_kib(flooded)
    finally:
        close_all(opened)
    assert "Too many open files" not in flooded.log_text()
    figures.update(
        idle_connections_held=held,
        opening_seconds=round(opening_seconds, 1),
        login_seconds_password_totp_exec=round(login_seconds, 2),
        login_seconds_same_without_the_idle_connections=round(baseline_seconds, 2),
        gateway_rss_kib_per_idle_connection=round((rss_held - rss_before) / held, 1),
    )


async def test_restarting_attackers_do_not_starve_a_sign_in(
    flooded: Gateway, figures: dict[str, Any]
) -> None:
    """Password checks queue with a person's usual address first (PasswordChecks): measured
    from such an address, and from one the gateway has never seen (which waits its turn)."""
    victim, earlier, usual, newcomer = (flooded.make_user() for _ in range(4))
    # Someone signed in from 127.24.0.1 before: it is a known-good address now.
    assert flooded.run_ssh(earlier, "web01", "true", source="127.24.0.1").returncode == 0
    login = f"{victim.name}:web01"
    attackers = [
        asyncio.create_task(
            hostile_login(
                flooded.port,
                login,
                {"Password": ["guess"] * 50, "Verification": [None] * 50},
                source=f"127.23.{index // 250}.{index % 250 + 1}",
                timeout=300,
            )
        )  # fmt: skip
        for index in range(SIZE.restarting_attackers)
    ]
    await asyncio.sleep(1)  # their first checks are queued

    async def timed_login(user: Any, source: str) -> tuple[float, int]:
        started = time.monotonic()
        result = await asyncio.to_thread(
            flooded.run_ssh, user, "web01", "echo in", source=source, timeout=300
        )
        return time.monotonic() - started, result.returncode

    usual_seconds, usual_status = await timed_login(usual, "127.24.0.1")
    new_seconds, new_status = await timed_login(newcomer, "127.25.0.1")
    transcripts = await asyncio.gather(*attackers)
    assert usual_status == 0 and new_status == 0
    passwords = [t.passwords_sent for t in transcripts]
    assert max(passwords) <= 3  # max_attempts_per_connection
    figures.update(
        attackers=len(transcripts),
        passwords_sent_per_attacker_max=max(passwords),
        login_seconds_from_a_known_address=round(usual_seconds, 2),
        login_seconds_from_a_new_address=round(new_seconds, 2),
    )
