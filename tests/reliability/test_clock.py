"""Clock: grants, requests and lockouts at their expiry boundaries, to the second.

An injected clock stands still or jumps where the test says. Certificate validity at
its boundaries is tested in tests/test_machine_admission.py::
test_validity_boundaries_to_the_second, TOTP skew in
tests/test_identities.py::test_totp_accepts_skew_and_refuses_replay.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.config import AuthSettings, RuleSettings
from gateway.domain.approvals import AccessRequests, ApprovalError
from gateway.domain.audit.trail import AuditLog
from gateway.domain.identities import UserDirectory
from gateway.domain.lockout import FailureLimiter
from gateway.store.database import Store
from tests.support.clock import Clock
from tests.support.secrets import test_secret_box

pytestmark = pytest.mark.reliability

RULE = RuleSettings(
    id="ops-web", groups=["ops"], targets=["web01"], mode="approval", approver_groups=["leads"],
    default_duration="10m", max_duration="10m",
)  # fmt: skip


@pytest.fixture()
def requests(store: Store) -> tuple[AccessRequests, Clock]:
    clock = Clock()
    audit = AuditLog(store, clock=clock)
    users = UserDirectory(store, audit, secret_box=test_secret_box(), clock=clock)
    users.add_user("alice", actor="root", groups=["ops"], password="a long password")
    users.add_user("bob", actor="root", groups=["leads"], password="a long password")
    return AccessRequests(store, audit, clock=clock), clock


def ask(requests: AccessRequests) -> int:
    return requests.create(user="alice", target="web01", account="root", rule=RULE,
                           reason="rotate keys", source="10.0.0.1").id  # fmt: skip


def seconds(moment: datetime) -> float:
    return moment.replace(tzinfo=moment.tzinfo or UTC).timestamp()


def test_grant_ends_exactly_at_its_end(requests: tuple[AccessRequests, Clock]) -> None:
    access, clock = requests
    access.approve(ask(access), "bob")
    grant = access.active_grant("alice", "web01", "root")
    assert grant is not None
    end = seconds(grant.ends_at)
    assert end - clock.now == 600
    clock.now = end - 1
    assert access.active_grant("alice", "web01", "root") is not None
    clock.now = end
    assert access.active_grant("alice", "web01", "root") is None


def test_request_cannot_be_approved_at_or_after_expiry(
    requests: tuple[AccessRequests, Clock],
) -> None:
    access, clock = requests
    late = ask(access)
    expires = seconds(access.get(late).expires_at)
    clock.now = expires
    with pytest.raises(ApprovalError):
        access.approve(late, "bob")
    assert access.active_grant("alice", "web01", "root") is None
    clock.now = expires + 10
    in_time = ask(access)
    clock.now = seconds(access.get(in_time).expires_at) - 1
    assert access.approve(in_time, "bob").status == "approved"


def test_backoff_lifts_exactly_when_it_says(store: Store) -> None:
    clock = Clock()
    settings = AuthSettings(user_source_failures=2, backoff_seconds=300)
    limiter = FailureLimiter(store, AuditLog(store), settings, clock=clock)
    limiter.record_failure("alice", "10.0.0.1")
    assert limiter.record_failure("alice", "10.0.0.1").backoffs == ("pair",)
    state = limiter.state("alice", "10.0.0.1")
    assert state.blocked and state.retry_after_seconds == 300
    clock.now += 299.999
    assert limiter.state("alice", "10.0.0.1").blocked
    clock.now += 0.001
    assert not limiter.state("alice", "10.0.0.1").blocked
