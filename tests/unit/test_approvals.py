"""Requests, approvals and grants against a real SQLite file, with an injected clock."""

from __future__ import annotations

import sqlite3
import time
from datetime import timedelta

import pytest

from gateway.config import RuleSettings
from gateway.domain.approvals import AccessRequests, ApprovalError
from gateway.domain.audit.trail import AuditLog, Trail
from gateway.domain.identities import UserDirectory
from gateway.store.database import Store
from tests.support.clock import Clock
from tests.support.secrets import test_secret_box

RULE = RuleSettings(
    id="ops-root", groups=["ops"], targets=["*"], mode="approval", approver_groups=["leads"],
    approvals_required=2, default_duration="1h", reason_required=True,
)  # fmt: skip


@pytest.fixture()
def setup(store: Store) -> tuple[AccessRequests, UserDirectory, Clock, AuditLog]:
    clock = Clock()
    audit = AuditLog(store, clock=clock)
    users = UserDirectory(store, audit, secret_box=test_secret_box(), clock=clock)
    for name, groups in (("alice", ["ops", "leads"]), ("bob", ["leads"]), ("carol", ["leads"]),
                         ("dave", ["ops"])):  # fmt: skip
        users.add_user(name, actor="root", groups=groups, password="a long password")
    return AccessRequests(store, audit, clock=clock), users, clock, audit


def open_request(requests: AccessRequests) -> int:
    return requests.create(user="alice", target="web01", account="root", rule=RULE,
                           reason="deploy hotfix 42", source="10.0.0.1").id  # fmt: skip


def test_quorum_of_distinct_approvers_makes_a_grant(setup) -> None:
    requests, _, clock, audit = setup
    request_id = open_request(requests)
    assert requests.active_grant("alice", "web01", "root") is None
    after_one = requests.approve(request_id, "bob", "ok")
    assert after_one.status == "pending" and after_one.approvals == ("bob",)
    with pytest.raises(ApprovalError, match="already approved"):
        requests.approve(request_id, "bob")
    done = requests.approve(request_id, "carol", "fine")
    assert done.status == "approved" and done.grant_id is not None
    grant = requests.active_grant("alice", "web01", "root")
    assert grant is not None and grant.authority == f"grant:{done.grant_id}"
    assert grant.ends_at - grant.starts_at == timedelta(hours=1)
    clock.now += 3601
    assert requests.active_grant("alice", "web01", "root") is None
    actions = [r.action for r in audit.events(Trail.HUMAN)]
    assert actions[-5:] == [
        "request.created",
        "request.approved",
        "request.decision_refused",  # bob's second try
        "request.approved",
        "grant.created",
    ]


def test_rules_that_cannot_be_bent(setup) -> None:
    requests, users, _, _ = setup
    request_id = open_request(requests)
    with pytest.raises(ApprovalError, match="your own request"):
        requests.approve(request_id, "alice")
    with pytest.raises(ApprovalError, match="not in an approver group"):
        requests.approve(request_id, "dave")
    with pytest.raises(ApprovalError, match="not an enabled user"):
        requests.approve(request_id, "nobody")
    requests.approve(request_id, "bob")
    users.set_disabled("bob", True, actor="root")  # bob's approval stops counting
    assert requests.approve(request_id, "carol").status == "pending"
    with pytest.raises(ApprovalError, match="needs a comment"):
        requests.deny(request_id, "carol", " ")


def test_one_denial_ends_the_request(setup) -> None:
    requests, _, _, _ = setup
    request_id = open_request(requests)
    requests.approve(request_id, "bob")
    denied = requests.deny(request_id, "carol", "not during the freeze")
    assert (denied.status, denied.decided_by, denied.comment) == (
        "denied",
        "carol",
        "not during the freeze",
    )
    with pytest.raises(ApprovalError, match="is denied, not pending"):
        requests.approve(request_id, "bob")


def test_expired_and_cancelled_requests_cannot_be_decided(setup) -> None:
    requests, _, clock, _ = setup
    first = open_request(requests)
    clock.now += 31 * 60
    with pytest.raises(ApprovalError, match="expired"):
        requests.approve(first, "bob")
    assert requests.get(first).status == "expired"
    second = open_request(requests)
    requests.cancel(second, "alice")
    with pytest.raises(ApprovalError, match="cancelled"):
        requests.approve(second, "bob")


def test_reason_required(setup) -> None:
    requests, _, _, _ = setup
    with pytest.raises(ApprovalError, match="requires a reason"):
        requests.create(user="alice", target="web01", account="root", rule=RULE, reason=" ",
                        source="10.0.0.1")  # fmt: skip


def test_revoke_ends_the_grant(setup) -> None:
    requests, _, _, _ = setup
    request_id = open_request(requests)
    requests.approve(request_id, "bob")
    grant_id = requests.approve(request_id, "carol").grant_id
    revoked = requests.revoke(grant_id, "root@gw", "incident over")
    assert revoked.revoked and requests.active_grant("alice", "web01", "root") is None
    with pytest.raises(ApprovalError, match="revoked already"):
        requests.revoke(grant_id, "root@gw", "again")


def test_reading_requests_never_writes_and_expiry_is_audited_once(setup, store: Store) -> None:
    """Waiting sessions read their request every half second: a read must not take the
    database's write lock (on SQLite one for the whole file) nor write an event."""
    requests, _, clock, audit = setup
    request_id = open_request(requests)
    clock.now += 31 * 60
    events_before = len(list(audit.events(Trail.HUMAN)))
    if store.is_sqlite:  # another process holds the write lock meanwhile
        locker = sqlite3.connect(store.engine.url.database, timeout=0)
        locker.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    assert requests.get(request_id).status == "expired"  # as its reader sees it
    assert [r.id for r in requests.list(pending_only=True)] == []
    assert requests.list(limit=1)[0].status == "expired"
    assert time.monotonic() - started < 2, "a read waited for the write lock"
    if store.is_sqlite:
        locker.rollback()
        locker.close()
    assert len(list(audit.events(Trail.HUMAN))) == events_before  # nothing written
    assert requests.expire_stale() == 1  # what a running node does every few seconds
    assert requests.expire_stale() == 0
    expired = [r for r in audit.events(Trail.HUMAN) if r.action == "request.expired"]
    assert len(expired) == 1 and expired[0].reason == "nobody answered in time"
