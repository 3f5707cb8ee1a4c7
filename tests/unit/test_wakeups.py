"""Sessions waiting for a decision are woken by it: in process, and over PostgreSQL NOTIFY."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from gateway.config import RuleSettings
from gateway.domain.approvals import AccessRequests
from gateway.domain.audit.trail import AuditLog
from gateway.domain.identities import UserDirectory
from gateway.domain.wakeups import (
    CHANNEL_SAFETY_POLL_SECONDS,
    SQLITE_SAFETY_POLL_SECONDS,
    DecisionWakeups,
)
from gateway.store.database import Store
from gateway.store.notifications import PostgresDecisionChannel
from tests.support.clock import Clock
from tests.support.database import fresh_database, postgres_server_url
from tests.support.secrets import test_secret_box

RULE = RuleSettings(
    id="ops-root", groups=["ops"], targets=["*"], mode="approval", approver_groups=["leads"],
    approvals_required=1, default_duration="1h", reason_required=True,
)  # fmt: skip


def requests_over(
    store: Store, wakeups: DecisionWakeups, clock: Clock | None = None
) -> AccessRequests:
    clock = clock or Clock(time.time())
    audit = AuditLog(store, clock=clock)
    users = UserDirectory(store, audit, secret_box=test_secret_box())
    for name, groups in (("alice", ["ops"]), ("bob", ["leads"])):
        if users.get(name) is None:
            users.add_user(name, actor="root", groups=groups, password="a long password")
    return AccessRequests(store, audit, wakeups=wakeups, clock=clock)


def open_request(requests: AccessRequests) -> int:
    return requests.create(user="alice", target="web01", account="root", rule=RULE,
                           reason="deploy hotfix 42", source="10.0.0.1").id  # fmt: skip


class Woken:
    """A wake callback that remembers being called, from whichever thread."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self) -> None:
        self.event.set()


@pytest.mark.parametrize("decide", ["approve", "deny", "cancel"])
def test_a_decision_in_this_process_wakes_its_waiters_only(store: Store, decide: str) -> None:
    wakeups = DecisionWakeups()
    requests = requests_over(store, wakeups)
    waited, other = open_request(requests), open_request(requests)
    woken, not_woken, stopped = Woken(), Woken(), Woken()
    wakeups.watch(waited, woken)
    wakeups.watch(other, not_woken)
    wakeups.watch(waited, stopped)()  # stops watching at once
    if decide == "approve":
        requests.approve(waited, "bob")
    elif decide == "deny":
        requests.deny(waited, "bob", "change freeze")
    else:
        requests.cancel(waited, "alice")
    assert woken.event.is_set()
    assert not not_woken.event.is_set() and not stopped.event.is_set()
    assert wakeups.safety_poll_seconds == SQLITE_SAFETY_POLL_SECONDS


def test_expiry_wakes_the_waiter(store: Store) -> None:
    wakeups, clock = DecisionWakeups(), Clock()
    requests = requests_over(store, wakeups, clock)
    waited = open_request(requests)
    woken = Woken()
    wakeups.watch(waited, woken)
    clock.now += 7 * 24 * 3600  # long past any request's expiry
    assert requests.expire_stale() == 1
    assert woken.event.is_set()


def test_a_failing_waiter_does_not_keep_the_others_asleep(store: Store) -> None:
    wakeups = DecisionWakeups()
    requests = requests_over(store, wakeups)
    waited = open_request(requests)

    def broken() -> None:
        raise RuntimeError("event loop closed")

    woken = Woken()
    wakeups.watch(waited, broken)
    wakeups.watch(waited, woken)
    requests.approve(waited, "bob")
    assert woken.event.is_set()


@pytest.fixture()
def two_processes_on_postgres() -> Iterator[tuple[AccessRequests, AccessRequests]]:
    """Two AccessRequests over one PostgreSQL database, each with its own store (as the
    gateway and the CLI have), each with its own LISTEN/NOTIFY channel."""
    with fresh_database(postgres_server_url()) as url:
        stores = [Store(url), Store(url)]
        stores[0].create_schema()
        wakeups = [DecisionWakeups(PostgresDecisionChannel(s)) for s in stores]
        try:
            yield requests_over(stores[0], wakeups[0]), requests_over(stores[1], wakeups[1])
        finally:
            for each in wakeups:
                each.close()
            for each in stores:
                each.dispose()


@pytest.mark.postgres
def test_a_decision_in_another_process_wakes_the_waiter_by_notify(
    two_processes_on_postgres: tuple[AccessRequests, AccessRequests],
) -> None:
    gateway, cli = two_processes_on_postgres
    assert gateway.wakeups.safety_poll_seconds == CHANNEL_SAFETY_POLL_SECONDS
    waited = open_request(gateway)
    woken = Woken()
    gateway.wakeups.watch(waited, woken)  # returns once listening
    began = time.perf_counter()
    cli.approve(waited, "bob")
    assert woken.event.wait(CHANNEL_SAFETY_POLL_SECONDS)
    print(f"woken by NOTIFY {(time.perf_counter() - began) * 1000:.1f} ms after approve()")


@pytest.mark.postgres
def test_a_rolled_back_decision_wakes_nobody(
    two_processes_on_postgres: tuple[AccessRequests, AccessRequests],
) -> None:
    gateway, cli = two_processes_on_postgres
    waited, other = open_request(gateway), open_request(gateway)
    woken, other_woken = Woken(), Woken()
    gateway.wakeups.watch(waited, woken)
    gateway.wakeups.watch(other, other_woken)
    with pytest.raises(RuntimeError), cli._store.transaction() as db:
        cli.wakeups.announce(db, waited)
        raise RuntimeError("the decision failed after its NOTIFY")
    # A later, committed decision on another request arrives; the rolled-back one never did.
    cli.approve(other, "bob")
    assert other_woken.event.wait(CHANNEL_SAFETY_POLL_SECONDS)
    assert not woken.event.is_set()
