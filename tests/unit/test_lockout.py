"""Failed-sign-in throttling with an injected clock (no sockets)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.config import AuthSettings
from gateway.domain.audit.trail import AuditLog, Trail
from gateway.domain.lockout import FailureLimiter, source_key
from gateway.store.database import Store
from tests.support.clock import Clock

SETTINGS = AuthSettings(
    user_source_failures=3,
    user_source_forget_seconds=600,
    source_failures=5,
    source_forget_seconds=60,
    backoff_seconds=100,
    max_backoff_seconds=1000,
    failure_delay_seconds=0.5,
)


@pytest.fixture()
def limiter(store: Store) -> tuple[FailureLimiter, Clock]:
    clock = Clock()
    return FailureLimiter(store, AuditLog(store), SETTINGS, clock=clock), clock


def test_a_user_is_throttled_per_address_with_doubling_backoff(limiter) -> None:
    limits, clock = limiter
    assert [limits.record_failure("alice", "10.0.0.1").backoffs for _ in range(3)] == [
        (), (), ("pair",),
    ]  # fmt: skip
    state = limits.state("alice", "10.0.0.1")
    assert state.blocked and state.scope == "pair"
    assert state.retry_after_seconds == pytest.approx(100)
    # The same user from another address is not held back at all.
    assert not limits.state("alice", "10.0.0.2").blocked
    clock.now += 100
    assert not limits.state("alice", "10.0.0.1").blocked
    limits.record_failure("alice", "10.0.0.1")
    assert limits.state("alice", "10.0.0.1").retry_after_seconds == pytest.approx(200)
    clock.now += 200
    limits.record_failure("alice", "10.0.0.1")
    assert limits.state("alice", "10.0.0.1").retry_after_seconds == pytest.approx(400)


def test_backoff_stops_doubling_at_its_maximum(limiter) -> None:
    limits, clock = limiter
    for _ in range(10):
        limits.record_failure("alice", "10.0.0.1")
    assert limits.state("alice", "10.0.0.1").retry_after_seconds == pytest.approx(1000)


def test_a_source_is_throttled_for_every_user_name(limiter) -> None:
    limits, _ = limiter
    outcomes = [limits.record_failure(f"user{i}", "10.0.0.1") for i in range(5)]
    assert outcomes[-1].backoffs == ("source",)
    state = limits.state("someone-else", "10.0.0.1")
    assert state.blocked and state.scope == "source"
    assert not limits.state("someone-else", "10.0.0.2").blocked


def test_counters_forget_one_failure_per_period(limiter) -> None:
    limits, clock = limiter
    limits.record_failure("alice", "10.0.0.1")
    limits.record_failure("alice", "10.0.0.1")
    clock.now += 600  # the pair forgets one of its two
    assert limits.record_failure("alice", "10.0.0.1").backoffs == ()
    assert limits.record_failure("alice", "10.0.0.1").backoffs == ("pair",)


def test_ipv6_addresses_count_per_network(limiter) -> None:
    limits, _ = limiter
    assert source_key("2001:db8::1") == source_key("2001:db8::ffff") == "2001:db8::/64"
    assert source_key("::ffff:10.0.0.1") == "10.0.0.1"
    assert source_key("console:host") == "console:host"
    for host in range(3):  # three addresses of one /64: one counter
        limits.record_failure("alice", f"2001:db8::{host + 1}")
    assert limits.state("alice", "2001:db8::99").blocked
    assert not limits.state("alice", "2001:db8:0:1::1").blocked


def test_delay_grows_with_failures_from_a_source(limiter) -> None:
    limits, _ = limiter
    delays = [limits.record_failure(f"u{i}", "10.0.0.1").delay_seconds for i in range(4)]
    assert delays == [0.5, 1.0, 2.0, 4.0]


def test_success_forgets_the_pair_and_takes_back_its_own_count(limiter) -> None:
    limits, _ = limiter
    limits.record_failure("alice", "10.0.0.1")
    limits.record_failure("alice", "10.0.0.1")
    limits.record_failure("alice", "10.0.0.1")  # counted before the check ...
    limits.record_success("alice", "10.0.0.1")  # ... and it succeeded
    assert not limits.state("alice", "10.0.0.1").blocked
    assert limits.record_failure("alice", "10.0.0.1").backoffs == ()
    # The source still remembers the two real failures (and this new one).
    assert limits.record_failure("bob", "10.0.0.1").delay_seconds == 0.5 * 8


def test_unlock_clears_the_user_everywhere_and_is_audited(limiter, store: Store) -> None:
    limits, _ = limiter
    for source in ("10.0.0.1", "10.0.0.2"):
        for _ in range(3):
            limits.record_failure("bob", source)
    assert limits.state("bob", "10.0.0.1").blocked
    assert limits.unlock("bob", actor="admin") == 2
    assert not limits.state("bob", "10.0.0.1").blocked
    assert not limits.state("bob", "10.0.0.2").blocked
    unlocked = [e for e in AuditLog(store).events(Trail.HUMAN) if e.action == "user.unlocked"]
    assert unlocked and '"sources_cleared":2' in unlocked[-1].details


def test_failures_counted_at_once_by_several_processes_all_count(store: Store) -> None:
    # Relay workers and nodes each have their own connections: the first failure
    # from an address reaches several of them at the same moment.
    clock = Clock()
    stores = [Store(store.url) for _ in range(6)]
    start = threading.Barrier(len(stores))

    def fail(index: int) -> None:
        limits = FailureLimiter(stores[index], AuditLog(stores[index]), SETTINGS, clock=clock)
        start.wait()
        limits.record_failure(f"user{index}", "10.0.0.7")

    try:
        with ThreadPoolExecutor(len(stores)) as pool:
            list(pool.map(fail, range(len(stores))))
    finally:
        for each in stores:
            each.dispose()
    limits = FailureLimiter(store, AuditLog(store), SETTINGS, clock=clock)
    state = limits.state("someone-else", "10.0.0.7")
    assert state.source_failures == len(stores)
    assert state.blocked and state.scope == "source"
