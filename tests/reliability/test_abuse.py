"""Abuse: password guessing, TOTP codes out of their window, user enumeration by timing, SFTP.

Related tests elsewhere (not repeated here): lockout arithmetic
(tests/test_lockout.py), a replayed code over ssh
(tests/test_human_lane.py::test_replayed_code_is_refused) and in the domain
(tests/test_identities.py::test_totp_accepts_skew_and_refuses_replay),
port/agent/X11 forwarding on the human lane (test_human_lane.py) and on the
machine lane with SFTP (tests/test_machine_lane.py::test_forwarding_and_sftp_are_refused),
self-approval through the CLI (tests/test_approvals_e2e.py::
test_self_approval_and_outsiders_are_refused_and_quorum_counts) and the console
(tests/test_console.py::test_own_requests_are_shown_but_cannot_be_approved),
and credentials of one lane on the other
(tests/test_machine_lane.py::test_human_and_machine_lanes_do_not_mix).
"""

from __future__ import annotations

import statistics
import subprocess
import time
from typing import Any

import asyncssh
import pyotp
import pytest

from gateway.config import AuthSettings
from gateway.domain.audit.trail import AuditLog, Trail
from gateway.domain.lockout import FailureLimiter
from gateway.store.database import Store
from tests.support.clock import Clock
from tests.support.gateway import Gateway
from tests.support.reliability import SIZE, trail_events, wait_for_events

pytestmark = pytest.mark.reliability


def guesses_in(limiter: FailureLimiter, clock: Clock, seconds: float, *, spray: bool) -> int:
    """Passwords an attacker at one address gets checked in ``seconds``, retrying the moment
    each back-off lifts.

    ``spray``: a new user name each time (the per-address counter limits it); otherwise
    the same user name every time (the per-(user, address) counter limits it).
    """
    end = clock.now + seconds
    checked = 0
    attempt = 0
    while clock.now < end:
        attempt += 1
        user = f"victim{attempt}" if spray else "victim"
        state = limiter.state(user, "203.0.113.9")
        if state.blocked:
            clock.now += state.retry_after_seconds
            continue
        checked += 1
        outcome = limiter.record_failure(user, "203.0.113.9")
        clock.now += max(outcome.delay_seconds, 0.001)
    return checked


def test_guessing_budget_with_default_limits(store: Store, figures: dict[str, Any]) -> None:
    """Over a simulated day with the default [auth] limits, how many passwords get checked."""
    settings = AuthSettings()
    day = 24 * 3600.0
    one_user = guesses_in(
        FailureLimiter(store, AuditLog(store), settings, clock=(clock := Clock())),
        clock,
        day,
        spray=False,
    )
    any_users = guesses_in(
        FailureLimiter(store, AuditLog(store), settings, clock=(clock := Clock())),
        clock,
        day,
        spray=True,
    )
    # At most one guess per forget period once the back-off has grown to it, plus the free
    # failures and the doubling ramp (the simulation finds fewer: a maximal back-off lets a
    # counter forget several failures, and the attacker then climbs the ramp again).
    per_day = day / settings.user_source_forget_seconds
    assert settings.user_source_failures < one_user <= per_day + settings.user_source_failures + 12
    source_per_day = day / settings.source_forget_seconds
    assert settings.source_failures < any_users <= source_per_day + settings.source_failures + 12
    figures.update(
        guesses_per_day_one_user_one_address=one_user,
        guesses_per_day_one_address_any_users=any_users,
        guesses_per_day_one_user_from_a_slash24=one_user * 256,
    )


@pytest.mark.openssh
def test_live_guessing_is_cut_off_per_user_and_address(
    gateway: Gateway, figures: dict[str, Any]
) -> None:
    """Hammer the running gateway from one address; count attempts and passwords checked."""
    victim = gateway.make_user()
    attempts = 0
    started = time.monotonic()
    while time.monotonic() - started < SIZE.brute_force_seconds:
        result = gateway.run_ssh(victim, "web01", "true", password=f"guess{attempts}",
                                 source="127.0.9.1")  # fmt: skip
        assert result.returncode == 255
        attempts += 1
    elapsed = time.monotonic() - started
    failures = [e for e in trail_events(gateway, Trail.HUMAN, "auth.failure")
                if e["actor"] == victim.name]  # fmt: skip
    checked = [e for e in failures if not e["reason"].startswith("throttled")]
    assert len(failures) == attempts
    assert len(checked) == 3  # user_source_failures in the test config
    # The right password is refused from that address now too ...
    assert gateway.run_ssh(victim, "web01", "true", source="127.0.9.1").returncode == 255
    # ... and works from any other: the guessing locked nobody out.
    assert gateway.run_ssh(victim, "web01", "true", source="127.0.9.2").returncode == 0
    figures.update(
        attempts=attempts,
        seconds=round(elapsed, 1),
        attempts_per_minute=round(attempts / elapsed * 60),
        passwords_checked=len(checked),
        passwords_checked_per_minute=round(len(checked) / elapsed * 60, 1),
    )


@pytest.mark.openssh
def test_codes_outside_the_window_are_refused_and_audited(gateway: Gateway) -> None:
    user = gateway.make_user()
    totp = pyotp.TOTP(user.totp_secret)
    for offset in (-120, +120):  # two steps either side: beyond the one-step skew
        result = gateway.run_ssh(user, "web01", "echo in", code=totp.at(time.time() + offset),
                                 source="127.0.9.4")  # fmt: skip
        assert result.returncode == 255 and b"in" not in result.stdout
    failures = [e for e in trail_events(gateway, Trail.HUMAN, "auth.failure")
                if e["actor"] == user.name]  # fmt: skip
    assert [e["reason"] for e in failures] == ["wrong or reused verification code"] * 2
    gateway.cli("user", "unlock", user.name)


class _TimedWrongPassword(asyncssh.SSHClient):
    """Answers one password and one code wrongly, timing how long the gateway takes to refuse."""

    def __init__(self) -> None:
        self.answered_at: float | None = None
        self.seconds = 0.0
        self.rounds = 0

    def kbdint_auth_requested(self) -> str:
        return ""

    def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: list[tuple[str, bool]]
    ) -> list[str] | None:
        now = time.perf_counter()
        if self.answered_at is not None:
            self.seconds += now - self.answered_at
        self.rounds += 1
        if self.rounds > 2:
            return None  # one password and one code were refused: give up
        self.answered_at = time.perf_counter()
        return ["wrong-password" if "Password" in p else "000000" for p, _ in prompts]


async def _refusal_seconds(gateway: Gateway, name: str, source: str) -> float:
    """Server time to answer a wrong password and then a code: argon2, TOTP, failure delay."""
    client = _TimedWrongPassword()
    with pytest.raises((asyncssh.PermissionDenied, asyncssh.DisconnectError)):
        async with asyncssh.connect(
            "127.0.0.1", gateway.port, username=f"{name}:web01", known_hosts=None,
            client_factory=lambda: client, local_addr=(source, 0),
            preferred_auth="keyboard-interactive", client_keys=None, agent_path=None,
        ):  # fmt: skip
            pass
    assert client.rounds == 3, "the gateway should ask for a password again after the refusal"
    return client.seconds


@pytest.mark.openssh
async def test_unknown_and_known_users_take_the_same_time(
    gateway: Gateway, figures: dict[str, Any]
) -> None:
    """Unknown name vs known name with a wrong password, interleaved, each from a fresh address."""
    known = [gateway.make_user().name for _ in range(SIZE.timing_tries)]
    times: dict[str, list[float]] = {"known": [], "unknown": []}
    for index, name in enumerate(known):
        pair = [("known", name), ("unknown", f"ghost{index}x{id(known)}")]
        for kind, login in pair if index % 2 else reversed(pair):
            address = f"127.10.{len(times[kind]) % 250}.{2 + (kind == 'known')}"
            times[kind].append(await _refusal_seconds(gateway, login, address))
    refused = {e["actor"] for e in trail_events(gateway, Trail.HUMAN, "auth.failure")}
    assert set(known) <= refused and len(refused) >= 2 * len(known)
    medians = {kind: statistics.median(values) for kind, values in times.items()}
    spread = {kind: statistics.quantiles(values, n=4) for kind, values in times.items()}
    difference_ms = (medians["unknown"] - medians["known"]) * 1000
    # Equal work (a decoy argon2 verification for unknown names): the medians differ by less
    # than the spread of either side.
    iqr_ms = min((q[2] - q[0]) * 1000 for q in spread.values())
    assert abs(difference_ms) < max(iqr_ms, 15.0), (medians, spread)
    figures.update(
        tries_each=SIZE.timing_tries,
        median_known_ms=round(medians["known"] * 1000, 1),
        median_unknown_ms=round(medians["unknown"] * 1000, 1),
        median_difference_ms=round(difference_ms, 2),
        iqr_known_ms=round((spread["known"][2] - spread["known"][0]) * 1000, 1),
        iqr_unknown_ms=round((spread["unknown"][2] - spread["unknown"][0]) * 1000, 1),
    )


@pytest.mark.openssh
def test_sftp_where_the_rule_denies_file_transfer_is_refused_and_audited(
    gateway: Gateway,
) -> None:
    """The test config's rule has no ``file_transfer``: the default, deny."""
    user = gateway.make_user()
    options = gateway.ssh_command(f"{user.name}:web01")[1:-1]
    # sftp spells the port -P and reads USER:TARGET@host as a path: the login goes in User=.
    options = ["-P" if part == "-p" else part for part in options]
    sftp = ["sftp", *options, "-o", f"User={user.name}:web01", "127.0.0.1"]
    result = subprocess.run(sftp, env=gateway.ssh_env(user), input=b"ls /\n",
                            capture_output=True, timeout=30)  # fmt: skip
    assert result.returncode != 0, result.stdout
    assert b"SFTP refused" in result.stderr, result.stderr
    refused = wait_for_events(
        gateway, Trail.HUMAN, "access.refused", 1, actors={user.name}, timeout=10
    )
    assert refused and "SFTP refused" in refused[0]["reason"]
    starts = [
        e for e in trail_events(gateway, Trail.HUMAN, "session.start") if e["actor"] == user.name
    ]
    assert starts == []
