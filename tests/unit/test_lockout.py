"""Failed-login limits with an injected clock (no sockets)."""

from __future__ import annotations

import pytest

from gateway.config import AuthSettings
from gateway.domain.audit.trail import AuditLog
from gateway.domain.lockout import FailureLimiter
from gateway.store.database import Store
from tests.support.clock import Clock


@pytest.fixture()
def limiter(store: Store) -> tuple[FailureLimiter, Clock]:
    clock = Clock()
    settings = AuthSettings(
        max_failures_per_user=3,
        max_failures_per_source=5,
        failure_window_seconds=600,
        lockout_seconds=100,
        failure_delay_seconds=0.5,
    )
    return FailureLimiter(store, AuditLog(store), settings, clock=clock), clock


def test_user_lockout_and_doubling(limiter: tuple[FailureLimiter, Clock]) -> None:
    limits, clock = limiter
    for _ in range(2):
        assert limits.record_failure("alice", "10.0.0.1").new_lockouts == ()
    assert limits.record_failure("alice", "10.0.0.2").new_lockouts == ("user",)
    state = limits.state("alice", "10.0.0.9")
    assert (
        state.locked and state.scope == "user" and state.retry_after_seconds == pytest.approx(100)
    )
    clock.now += 101
    assert not limits.state("alice", "10.0.0.9").locked
    for _ in range(3):
        limits.record_failure("alice", "10.0.0.3")
    assert limits.state("alice", "10.0.0.9").retry_after_seconds == pytest.approx(200)


def test_source_lockout_covers_every_user(limiter: tuple[FailureLimiter, Clock]) -> None:
    limits, _ = limiter
    outcomes = [limits.record_failure(f"user{i}", "10.0.0.1") for i in range(5)]
    assert outcomes[-1].new_lockouts == ("source",)
    state = limits.state("someone-else", "10.0.0.1")
    assert state.locked and state.scope == "source"
    assert not limits.state("someone-else", "10.0.0.2").locked


def test_unknown_names_count_like_known_ones(limiter: tuple[FailureLimiter, Clock]) -> None:
    limits, _ = limiter
    for _ in range(3):
        limits.record_failure("no-such-user", "10.0.0.1")
    assert limits.state("no-such-user", "10.0.0.7").locked


def test_failures_outside_the_window_are_forgotten(limiter: tuple[FailureLimiter, Clock]) -> None:
    limits, clock = limiter
    limits.record_failure("alice", "10.0.0.1")
    limits.record_failure("alice", "10.0.0.1")
    clock.now += 601
    assert limits.record_failure("alice", "10.0.0.1").new_lockouts == ()


def test_delay_grows_with_failures_from_a_source(limiter: tuple[FailureLimiter, Clock]) -> None:
    limits, _ = limiter
    delays = [limits.record_failure(f"u{i}", "10.0.0.1").delay_seconds for i in range(4)]
    assert delays == [0.5, 1.0, 2.0, 4.0]


def test_success_and_unlock_reset_the_user(limiter: tuple[FailureLimiter, Clock]) -> None:
    limits, _ = limiter
    limits.record_failure("alice", "10.0.0.1")
    limits.record_failure("alice", "10.0.0.1")
    limits.record_success("alice")
    assert limits.record_failure("alice", "10.0.0.1").new_lockouts == ()
    for _ in range(3):
        limits.record_failure("bob", "10.0.0.2")
    assert limits.state("bob", "10.0.0.3").locked
    limits.unlock("bob", actor="admin")
    assert not limits.state("bob", "10.0.0.3").locked
