"""Login-name parsing and the one access decision (no sockets; a real store)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.domain.access import (
    AccessDecisions,
    Allowed,
    Denied,
    LoginName,
    NeedsApproval,
    Refusal,
    parse_login_name,
    user_part,
)
from gateway.domain.approvals import AccessRequests
from gateway.domain.audit.trail import AuditLog
from gateway.domain.identities import UserDirectory
from gateway.domain.policy import Policy
from gateway.errors import AccessDenied, DestinationSyntaxError, UnknownAccount, UnknownTarget
from gateway.store.database import Store
from tests.support.config import HOST_KEY
from tests.support.secrets import test_secret_box


@pytest.mark.parametrize(
    ("login", "parsed"),
    [
        ("alice", LoginName("alice", None, None)),
        ("alice:web01", LoginName("alice", "web01", None)),
        ("alice:root@web01", LoginName("alice", "web01", "root")),
        ("a.b-c_d:x.y@db-1.prod", LoginName("a.b-c_d", "db-1.prod", "x.y")),
    ],
)
def test_parse_login_name(login: str, parsed: LoginName) -> None:
    assert parse_login_name(login) == parsed


@pytest.mark.parametrize(
    "login",
    [
        "",
        ":web01",
        "alice:",
        "alice:@web01",
        "alice:root@",
        "alice:a@b@c",
        "al ice:web01",
        "alice:web01;rm",
        "alice:$(id)",
        "x" * 300,
        "alice:\x1b[2Jweb01",
        "alice:wéb01",
    ],
)
def test_malformed_login_names_are_rejected(login: str) -> None:
    with pytest.raises(DestinationSyntaxError):
        parse_login_name(login)


def test_user_part() -> None:
    assert user_part("alice:root@web01") == "alice"
    assert user_part("alice") == "alice"


RULES = """
[[rules]]
id = "ops-web"
groups = ["ops", "dba"]
targets = ["web01"]
mode = "allow"

[[rules]]
id = "dba-db"
groups = ["dba"]
targets = ["db01"]
mode = "allow"

[[rules]]
id = "ops-db-approval"
groups = ["ops"]
targets = ["db01"]
mode = "approval"
approver_groups = ["leads"]
break_glass = true
"""

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@dataclass
class Domain:
    access: AccessDecisions
    users: UserDirectory
    requests: AccessRequests


@pytest.fixture()
def domain(tmp_path: Path, store: Store) -> Domain:
    path = tmp_path / "pamgate.toml"
    path.write_text(
        f"""
[[targets]]
name = "web01"
host = "10.0.0.1"
accounts = ["deploy", "root"]
host_keys = ["{HOST_KEY}"]

[[targets]]
name = "db01"
host = "10.0.0.2"
accounts = ["postgres"]
host_keys = ["{HOST_KEY}"]
{RULES}"""
    )
    config = load_config(path)
    audit = AuditLog(store)
    users = UserDirectory(store, audit, secret_box=test_secret_box())
    for name, groups in (("al", ["ops"]), ("dee", ["dba"]), ("vic", ["visitors"]),
                         ("lee", ["leads"])):  # fmt: skip
        users.add_user(name, actor="tests", groups=groups, password="a long password")
    requests = AccessRequests(store, audit, clock=lambda: NOW.timestamp())
    return Domain(AccessDecisions(config, Policy(config), users, requests), users, requests)


def test_allowed_with_default_and_named_account(domain: Domain) -> None:
    default = domain.access.decide("al", "web01", None, source="10.1.1.1", at=NOW)
    assert isinstance(default, Allowed)
    assert (default.target.name, default.account) == ("web01", "deploy")
    assert default.authority == "policy:ops-web" and default.rule.id == "ops-web"
    assert default.at == NOW and default.grant is None
    named = domain.access.decide("al", "web01", "root", source="10.1.1.1", at=NOW)
    assert isinstance(named, Allowed) and named.account == "root"


@pytest.mark.parametrize(
    ("user", "target", "account", "refusal", "message", "error"),
    [
        ("al", "nosuch", None, Refusal.UNKNOWN_TARGET, "Targets you may reach: web01, db01",
         UnknownTarget),
        ("vic", "db01", None, Refusal.POLICY, "no rule", AccessDenied),
        ("al", "web01", "admin", Refusal.UNKNOWN_ACCOUNT, "Accounts: deploy, root",
         UnknownAccount),
        ("nobody", "web01", None, Refusal.UNKNOWN_USER, "no user named 'nobody'", AccessDenied),
    ],
)  # fmt: skip
def test_denied_is_a_value_with_a_reason(
    domain: Domain, user: str, target: str, account: str | None, refusal: Refusal, message: str,
    error: type[Exception],
) -> None:  # fmt: skip
    decision = domain.access.decide(user, target, account, source="10.1.1.1", at=NOW)
    assert isinstance(decision, Denied)
    assert decision.refusal == refusal and message in decision.reason
    assert isinstance(decision.error(), error) and str(decision.error()) == decision.reason


def test_a_disabled_user_is_denied_at_once(domain: Domain) -> None:
    domain.users.set_disabled("al", True, actor="tests")
    decision = domain.access.decide("al", "web01", None, source="10.1.1.1", at=NOW)
    assert isinstance(decision, Denied) and decision.refusal == Refusal.USER_DISABLED


def test_groups_are_read_at_each_decision(domain: Domain) -> None:
    assert isinstance(domain.access.decide("vic", "web01", None, source="h", at=NOW), Denied)
    domain.users.set_groups("vic", ["ops"], actor="tests")
    assert isinstance(domain.access.decide("vic", "web01", None, source="h", at=NOW), Allowed)


def test_approval_rule_needs_approval_until_a_grant_is_active(domain: Domain) -> None:
    needed = domain.access.decide("al", "db01", None, source="10.1.1.1", at=NOW)
    assert isinstance(needed, NeedsApproval)
    assert needed.rule.id == "ops-db-approval" and needed.break_glass_allowed
    assert needed.account == "postgres" and "needs approval" in needed.reason
    request = domain.requests.create(
        user="al",
        target="db01",
        account="postgres",
        rule=needed.rule,
        reason="rotate keys",
        source="h",
    )
    domain.requests.approve(request.id, "lee", "ok")
    allowed = domain.access.decide("al", "db01", None, source="10.1.1.1", at=NOW)
    assert isinstance(allowed, Allowed) and allowed.grant is not None
    assert allowed.authority == f"grant:{allowed.grant.id}" and allowed.rule.id == "ops-db-approval"
    # One clock: a decision made after the grant's end needs approval again.
    later = NOW + timedelta(hours=2)
    assert isinstance(domain.access.decide("al", "db01", None, source="h", at=later), NeedsApproval)


def test_reachable_targets(domain: Domain) -> None:
    dee, vic = domain.users.get("dee"), domain.users.get("vic")
    assert dee is not None and vic is not None
    assert [t.name for t in domain.access.reachable_targets(dee)] == ["web01", "db01"]
    assert domain.access.reachable_targets(vic) == []


def test_live_access_is_judged_again_with_current_groups_and_time(domain: Domain) -> None:
    al = domain.users.get("al")
    assert al is not None
    assert domain.access.still_allowed(al, "web01", "root", source="h", at=NOW, grant=None) is None
    domain.users.set_groups("al", ["visitors"], actor="tests")
    now_visitor = domain.users.get("al")
    assert now_visitor is not None
    denied = domain.access.still_allowed(now_visitor, "web01", "root", source="h", at=NOW,
                                         grant=None)  # fmt: skip
    assert denied is not None and denied.refusal == Refusal.POLICY


def test_live_access_under_an_approval_rule_needs_its_grant(domain: Domain) -> None:
    al = domain.users.get("al")
    assert al is not None
    needed = domain.access.decide("al", "db01", None, source="h", at=NOW)
    assert isinstance(needed, NeedsApproval)
    request = domain.requests.create(
        user="al",
        target="db01",
        account="postgres",
        rule=needed.rule,
        reason="rotate keys",
        source="h",
    )
    domain.requests.approve(request.id, "lee", "ok")
    allowed = domain.access.decide("al", "db01", None, source="h", at=NOW)
    assert isinstance(allowed, Allowed) and allowed.grant is not None
    assert domain.access.still_allowed(al, "db01", "postgres", source="h", at=NOW,
                                       grant=allowed.grant) is None  # fmt: skip
    without = domain.access.still_allowed(al, "db01", "postgres", source="h", at=NOW, grant=None)
    assert without is not None and "has no grant" in without.reason
