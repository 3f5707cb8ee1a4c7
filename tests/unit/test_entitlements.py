"""Entitlement review in the domain: the report is the access decision's answer, use comes
from the session records, stale and excessive access is found, narrower scopes are drawn
from observed use, and review campaigns are decided by their reviewers only, act on the
decision and escalate what is overdue, all audited in the trail of the identity's type."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.devtools.openssh_target import free_port
from gateway.domain.access import Allowed, NeedsApproval
from gateway.domain.alerts import WebhookDelivery
from gateway.domain.audit.trail import Trail
from gateway.domain.entitlements.analysis import Entitlements
from gateway.domain.entitlements.campaigns import ReviewCampaigns, ReviewError
from gateway.domain.entitlements.usage import UsageReader
from gateway.domain.machines.credentials import MachineCredentials
from gateway.domain.machines.registry import MachineError, ScopeTarget
from gateway.domain.operators import LocalAdmin, RoleMissing
from gateway.domain.sessions import SessionLedger, SessionStart
from gateway.errors import PamgateError
from gateway.services import GatewayServices
from gateway.store.models import ReviewItem, User
from tests.support.console import add_person, console_services

DAY = 86400.0


class Hooks(BaseHTTPRequestHandler):
    received: list[dict[str, object]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hooks.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def webhook() -> Iterator[int]:
    port = free_port()
    server = HTTPServer(("127.0.0.1", port), Hooks)
    Hooks.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield port
    server.shutdown()


def extra_config(port: int, *, suspend: bool = True) -> str:
    return f"""
[approvals]
webhooks = ["http://127.0.0.1:{port}/hook"]

[reviews]
suspend_overdue = {"true" if suspend else "false"}
manager_groups = {{ dev = "dev-leads" }}

[[targets]]
name = "db01"
host = "127.0.0.1"
port = 1
accounts = ["postgres", "root"]
host_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFmTjzR9GHjvjKJTd3OAMN9YLhGXgOG7r3DujrQ3pqVP"]

[[rules]]
id = "dev-db01"
groups = ["dev"]
targets = ["db01"]
accounts = ["postgres"]
mode = "allow"
sources = ["10.1.0.0/16"]
file_transfer = "download-only"

[[rules]]
id = "dev-web01"
groups = ["dev"]
targets = ["web01"]
mode = "allow"
"""


@pytest.fixture()
def services(tmp_path: Path, webhook: int) -> Iterator[GatewayServices]:
    opened = console_services(tmp_path, extra_config(webhook))
    yield opened
    opened.close()


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def session(
    services: GatewayServices,
    clock: Clock,
    lane: str,
    user: str,
    target: str,
    account: str,
    authority: str,
    command: str | None,
    source: str = "10.1.2.3",
) -> None:
    ledger = SessionLedger(services.store, services.audit, "test", clock=clock)
    kind = "exec" if command is not None else "shell"
    ledger.open(
        ledger.new_session_id(),
        SessionStart(lane, user, target, account, source, authority, kind, command),
    )


def add_machine(services: GatewayServices, name: str, **scope: object) -> None:
    services.machines.add(
        name,
        actor="tests",
        kind="service-account",
        owner=str(scope.pop("owner", "ann")),
        tech_owner="ops@example.net",
        purpose="tests",
        targets=scope.pop("targets", [ScopeTarget("web01", "root")]),  # type: ignore[arg-type]
        commands=scope.pop("commands", ["uptime"]),  # type: ignore[arg-type]
        **scope,  # type: ignore[arg-type]
    )


def at_clock(services: GatewayServices, clock: Clock) -> tuple[Entitlements, ReviewCampaigns]:
    entitlements = Entitlements(
        services.config,
        services.access,
        services.requests,
        services.users,
        services.machines,
        UsageReader(services.store),
        clock=clock,
    )
    campaigns = ReviewCampaigns(
        services.config,
        services.store,
        services.audit,
        services.alerts,
        services.users,
        services.machines,
        services.machine_revocations,
        entitlements,
        clock=clock,
    )
    return entitlements, campaigns


def events(services: GatewayServices, trail: Trail, action: str) -> list[dict[str, object]]:
    return [
        {
            **json.loads(e.details),
            "actor": e.actor,
            "target": e.target,
            "reason": e.reason,
            "authority": e.authority,
            "outcome": e.outcome,
        }
        for e in services.audit.events(trail)
        if e.action == action
    ]


# -- the report ---------------------------------------------------------------------------


def test_the_report_is_the_access_decisions_answer_with_its_limits_and_last_use(
    services: GatewayServices,
) -> None:
    add_person(services, "carol", "dev")
    add_person(services, "dave", "ops")
    add_person(services, "erin", "dev")
    services.users.set_disabled("erin", True, actor="tests")
    add_machine(services, "svc-a", commands=["uptime", "re:df( -h)?"], sources=["10.9.0.0/16"])
    clock = Clock()
    session(services, clock, "human", "carol", "web01", "root", "policy:dev-web01", None)
    session(services, clock, "machine", "svc-a", "web01", "root", "nhi:svc-a;serial=3", "uptime")
    paths = {(p.identity, p.target, p.account): p for p in services.entitlements.report()}

    web = paths[("carol", "web01", "root")]
    assert (web.via, web.authority, web.sources) == ("allow", "policy:dev-web01", ())
    assert web.sessions == 1 and web.last_used is not None
    # Only from the rule's network: the decision from anywhere is no; from 10.1.0.0 it is yes.
    db = paths[("carol", "db01", "postgres")]
    assert (db.via, db.sources, db.limits["file_transfer"]) == (
        "allow",
        ("10.1.0.0/16",),
        "download-only",
    )
    assert db.last_used is None and db.sessions == 0
    assert ("carol", "db01", "root") not in paths  # the rule covers postgres only
    ops = paths[("dave", "web01", "root")]
    assert (ops.via, ops.authority) == ("approval", "policy:ops-web01")
    assert ops.limits["approver_groups"] == ["approvers"] and ops.limits["break_glass"] is True
    assert not [p for p in paths if p[0] == "erin"]  # disabled: reaches nothing
    nhi = paths[("svc-a", "web01", "root")]
    assert (nhi.via, nhi.authority, nhi.sources) == ("nhi-scope", "nhi:svc-a", ("10.9.0.0/16",))
    assert nhi.limits["commands"] == ["uptime", "re:df( -h)?"] and nhi.sessions == 1

    # A current grant answers the approval rule: the report names the grant.
    request = services.requests.create(
        user="dave",
        target="web01",
        account="root",
        rule=services.config.rules[0],
        reason="x",
        source="10.0.0.1",
    )
    add_person(services, "bob", "approvers")
    services.requests.approve(request.id, "bob", "ok")
    granted = services.entitlements.report(identity="dave")
    assert [(p.via, p.authority[:6]) for p in granted] == [("grant", "grant:")]
    assert "grant_ends_at" in granted[0].limits
    # No second evaluator: every path "from anywhere" is what decide() says from anywhere.
    for user in ("carol", "dave", "erin"):
        for target in services.config.targets:
            for account in target.accounts:
                decision = services.access.decide(user, target.name, account, source="anywhere")
                listed = [
                    p
                    for p in services.entitlements.report(identity=user)
                    if (p.target, p.account) == (target.name, account) and not p.sources
                ]
                assert bool(listed) == isinstance(decision, Allowed | NeedsApproval)
    with pytest.raises(Exception, match="no human or machine identity named 'nobody'"):
        services.entitlements.report(identity="nobody")


# -- stale, excessive, suggestions --------------------------------------------------------------


def test_stale_identities_and_never_used_scope_are_found_with_a_narrower_scope(
    services: GatewayServices,
) -> None:
    clock = Clock()
    clock.now -= 60 * DAY
    entitlements, _ = at_clock(services, clock)
    add_person(services, "carol", "dev")
    add_person(services, "dave", "dev")
    add_person(services, "newt", "dev")
    with services.store.transaction() as db:  # carol and dave joined 60 days ago
        for user in db.scalars(select(User).where(User.name.in_(["carol", "dave"]))):
            user.created_at = datetime.fromtimestamp(clock.now, UTC)
    add_machine(
        services,
        "svc-wide",
        targets=[ScopeTarget("web01", "root"), ScopeTarget("db01", "postgres")],
        commands=["uptime", "re:cat /etc/host(name|s)", "rm -rf /srv/cache"],
    )
    session(services, clock, "human", "dave", "web01", "root", "policy:dev-web01", None)
    clock.now += 55 * DAY
    session(
        services,
        clock,
        "machine",
        "svc-wide",
        "web01",
        "root",
        "nhi:svc-wide",
        "uptime",
        source="10.7.0.5",
    )
    session(
        services,
        clock,
        "machine",
        "svc-wide",
        "web01",
        "root",
        "nhi:svc-wide",
        "cat /etc/hostname",
        source="10.7.0.5",
    )
    clock.now += 5 * DAY
    findings = {(f.kind, f.identity, f.item): f for f in entitlements.stale(30)}

    assert ("human", "carol", "sessions") in findings  # never used, account 60 days old
    assert ("human", "newt", "sessions") not in findings  # never used, but new
    assert ("human", "dave", "sessions") in findings  # last used 60 days ago
    never = findings[("nhi-command", "svc-wide", "'rm -rf /srv/cache'")]
    assert never.excessive and "never run" in never.detail
    assert findings[("nhi-target", "svc-wide", "db01:postgres")].excessive
    assert ("machine", "svc-wide", "active") not in findings  # it is used
    assert findings[("nhi-broad", "svc-wide", "sources")].excessive  # no --source
    assert ("rule", "ops-web01", "approval rule") in findings
    assert ("rule", "dev-web01", "allow rule") in findings  # dave's use is 60 days old

    suggestion = entitlements.suggest_machine("svc-wide", 30)
    assert suggestion.narrowable
    assert suggestion.targets == (ScopeTarget("web01", "root"),)
    assert suggestion.commands == ("uptime", "cat /etc/hostname")
    assert suggestion.sources == ("10.7.0.5/32",)
    assert any("rm -rf" in line for line in suggestion.removed)


def test_an_nhi_allowed_any_command_is_too_broad_even_when_new(
    services: GatewayServices,
) -> None:
    add_machine(services, "svc-any", commands=["re:.*", "re:df( -h)?"], sources=["10.0.0.0/8"])
    found = [(f.kind, f.item) for f in services.entitlements.stale(30) if f.identity == "svc-any"]
    assert found == [("nhi-broad", "re:.*")]


def test_join_tokens_left_usable_are_stale(services: GatewayServices) -> None:
    clock = Clock()
    clock.now -= 3 * DAY
    add_machine(services, "svc-t")
    credentials = MachineCredentials(
        services.store, services.audit, services.machine_ca, services.alerts, clock=clock
    )
    credentials.create_join_token("svc-t", ttl_seconds=7 * 86400, uses=1, actor="tests")
    kinds = {(f.kind, f.identity) for f in services.entitlements.stale(2)}
    assert ("join-token", "svc-t") in kinds
    assert ("join-token", "svc-t") not in {
        (f.kind, f.identity) for f in services.entitlements.stale(4)
    }


def test_narrowing_a_scope_never_widens_it(services: GatewayServices) -> None:
    add_machine(services, "svc-n", commands=["uptime", "re:df( -h)?"], sources=["10.0.0.0/8"])
    for hostile in (
        {"targets": [ScopeTarget("db01", "postgres")]},
        {"commands": ["id"]},
        {"commands": ["re:.*"]},
        {"sources": ["0.0.0.0/0"]},
        {"allow_pty": True},
    ):
        scope: dict[str, object] = {
            "targets": [ScopeTarget("web01", "root")],
            "commands": ["uptime"],
            "sources": ["10.1.0.0/16"],
            "allow_pty": False,
            "allow_sftp": False,
            **hostile,
        }
        with pytest.raises(MachineError):
            services.machines.narrow_scope("svc-n", actor="tests", reason="x", **scope)  # type: ignore[arg-type]
    assert services.machines.get("svc-n").commands == ("uptime", "re:df( -h)?")
    narrowed = services.machines.narrow_scope(
        "svc-n",
        actor="tests",
        reason="review",
        targets=[ScopeTarget("web01", "root")],
        commands=["df -h"],
        sources=["10.1.0.0/16"],
        allow_pty=False,
        allow_sftp=False,
    )
    assert narrowed.commands == ("df -h",) and not narrowed.command_allowed("uptime")
    assert events(services, Trail.MACHINE, "machine.scope_narrowed")[0]["before"]["commands"] == [
        "uptime",
        "re:df( -h)?",
    ]


# -- campaigns ----------------------------------------------------------------------------------


def test_a_campaign_is_decided_by_its_reviewers_only_and_acts_on_the_decision(
    services: GatewayServices,
) -> None:
    add_person(services, "ann", "auditors")  # a reviewer group member
    add_person(services, "owen", "ops", "approvers")  # the NHI's owner, by name, with a role
    add_person(services, "carol", "dev", "auditors")
    add_person(services, "lee", "dev-leads", "approvers")  # carol's manager group
    add_person(services, "dave", "dev", "approvers")  # a role, but no reviewer of anything
    add_machine(services, "svc-r", owner="owen", commands=["uptime", "id"])
    session(services, Clock(), "machine", "svc-r", "web01", "root", "nhi:svc-r", "uptime")
    admin = services.local_admin_actions(LocalAdmin("root", "gw"))
    campaign = admin.start_review("all", datetime.now(UTC) + timedelta(days=7), None)
    items = {i.identity: i for i in admin.review_items(campaign.id, pending_only=False)}
    assert set(items) == {"ann", "owen", "carol", "lee", "dave", "svc-r"}
    assert "owen" in items["svc-r"].reviewers and "group:auditors" in items["svc-r"].reviewers
    assert "group:dev-leads" in items["carol"].reviewers
    started = events(services, Trail.MACHINE, "review.started")
    assert [e["target"] for e in started] == ["nhi:svc-r"]  # the machine trail for NHIs
    assert len(events(services, Trail.HUMAN, "review.started")) == 5
    assert items["svc-r"].evidence["suggestion"]["commands"] == ["uptime"]

    # Nobody reviews their own access, not even a reviewer-group member.
    with pytest.raises(ReviewError, match="about you"):
        services.operator_actions("carol").decide_review(items["carol"].id, "keep", "fine")
    with pytest.raises(ReviewError, match="not a reviewer"):
        services.operator_actions("dave").decide_review(items["svc-r"].id, "keep", "fine")
    with pytest.raises(RoleMissing, match="signed in with MFA"):
        admin.decide_review(items["svc-r"].id, "keep", "fine")
    refused = events(services, Trail.HUMAN, "review.refused")
    assert [e["actor"] for e in refused] == ["carol"]
    assert [e["actor"] for e in events(services, Trail.MACHINE, "review.refused")] == ["dave"]
    assert services.reviews.item(items["svc-r"].id).status == "pending"

    # The owner narrows the NHI to what it used; the manager group reviews carol.
    decided = services.operator_actions("owen").decide_review(
        items["svc-r"].id, "narrow", "id was never used"
    )
    assert decided.decision == "narrow" and decided.decided_by == "owen"
    assert services.machines.get("svc-r").commands == ("uptime",)
    with pytest.raises(ReviewError, match="decided already"):
        services.operator_actions("ann").decide_review(items["svc-r"].id, "keep", "again")
    services.operator_actions("lee").decide_review(items["carol"].id, "suspend", "left the team")
    assert services.users.get("carol").disabled  # type: ignore[union-attr]
    decisions = events(services, Trail.MACHINE, "review.decided")
    assert decisions[0]["actor"] == "owen" and decisions[0]["decision"] == "narrow"
    assert decisions[0]["authority"] == "role:approver" and decisions[0]["mfa"] is True
    assert events(services, Trail.HUMAN, "review.decided")[0]["target"] == "carol"


def test_overdue_items_escalate_by_webhook_and_suspend_their_identity(
    services: GatewayServices,
) -> None:
    add_person(services, "ann", "auditors")
    add_machine(services, "svc-late")
    clock = Clock()
    _, campaigns = at_clock(services, clock)
    campaign = campaigns.start(
        "machines", datetime.fromtimestamp(clock.now + 3600, UTC), actor="tests"
    )
    assert campaigns.escalate_overdue() == []  # not due yet
    clock.now += 7200
    escalated = campaigns.escalate_overdue()
    assert [(i.identity, i.status) for i in escalated] == [("svc-late", "escalated")]
    assert services.machines.get("svc-late").status == "suspended"
    assert campaigns.escalate_overdue() == []  # once
    assert events(services, Trail.MACHINE, "review.escalated")[0]["campaign"] == campaign.id
    assert events(services, Trail.MACHINE, "machine.suspended")[0]["actor"] == (
        "gateway:review-escalation"
    )
    WebhookDelivery(services.store, services.audit).deliver_due()  # as a node's worker does
    assert Hooks.received[0]["kind"] == "review.overdue"
    assert Hooks.received[0]["identity"] == "svc-late" and Hooks.received[0]["suspended"]
    # Still decidable afterwards, by a reviewer.
    item = escalated[0]
    done = campaigns.decide(
        item.id,
        "offboard",
        "retired",
        reviewer=services.users.get("ann"),  # type: ignore[arg-type]
        actor="ann",
    )
    assert done.status == "decided" and services.machines.get("svc-late").status == "offboarded"


def test_bad_campaign_input_changes_nothing(services: GatewayServices) -> None:
    admin = services.local_admin_actions(LocalAdmin("root", "gw"))
    with pytest.raises(ReviewError, match="in the future"):
        admin.start_review("machines", datetime.now(UTC) - timedelta(days=1), None)
    with pytest.raises(ReviewError, match="nothing to review"):
        admin.start_review("machines", datetime.now(UTC) + timedelta(days=1), None)
    with pytest.raises(ReviewError, match="--of must be one of"):
        admin.start_review("everyone", datetime.now(UTC) + timedelta(days=1), None)
    assert admin.review_campaigns() == []
    add_person(services, "ann", "auditors")
    with pytest.raises(RoleMissing, match="admin role to start review campaigns"):
        services.operator_actions("ann").start_review(
            "all", datetime.now(UTC) + timedelta(days=1), None
        )


def test_a_decision_that_cannot_be_carried_out_changes_nothing(
    services: GatewayServices,
) -> None:
    add_person(services, "ann", "auditors")
    add_machine(services, "svc-idle")  # never used: there is no narrower scope
    admin = services.local_admin_actions(LocalAdmin("root", "gw"))
    campaign = admin.start_review("machines", datetime.now(UTC) + timedelta(days=1), None)
    [item] = admin.review_items(campaign.id, pending_only=True)
    with pytest.raises(ReviewError, match="no narrower scope"):
        services.operator_actions("ann").decide_review(item.id, "narrow", "too broad")
    assert services.reviews.item(item.id).status == "pending"
    assert services.machines.get("svc-idle").commands == ("uptime",)
    assert not events(services, Trail.MACHINE, "review.decided")
    with pytest.raises(ReviewError, match="needs --note"):
        services.operator_actions("ann").decide_review(item.id, "keep", "  ")
    kept = services.operator_actions("ann").decide_review(item.id, "suspend", "nobody uses it")
    assert kept.status == "decided" and services.machines.get("svc-idle").status == "suspended"


def test_only_auditors_admins_and_its_reviewers_see_an_items_evidence(
    services: GatewayServices,
) -> None:
    add_person(services, "owen", "approvers")
    add_person(services, "dave", "approvers")
    add_machine(services, "svc-o", owner="owen")
    admin = services.local_admin_actions(LocalAdmin("root", "gw"))
    campaign = admin.start_review("machines", datetime.now(UTC) + timedelta(days=1), None)
    [item] = admin.review_items(campaign.id, pending_only=False)
    assert services.operator_actions("owen").review_item(item.id).identity == "svc-o"
    assert services.operator_actions("dave").review_items(campaign.id, pending_only=False) == []
    with pytest.raises(RoleMissing, match="one of its reviewers"):
        services.operator_actions("dave").review_item(item.id)
    for days in (0, -5, 100000):
        with pytest.raises(PamgateError, match="--days must be between 1 and 3650"):
            services.entitlements.stale(days)
        with pytest.raises(PamgateError, match="--days must be between 1 and 3650"):
            services.entitlements.suggest_machine("svc-o", days)


def test_an_item_being_decided_cannot_be_decided_again(services: GatewayServices) -> None:
    add_person(services, "ann", "auditors")
    add_person(services, "bea", "auditors")
    add_machine(services, "svc-c")
    admin = services.local_admin_actions(LocalAdmin("root", "gw"))
    campaign = admin.start_review("machines", datetime.now(UTC) + timedelta(days=1), None)
    [item] = admin.review_items(campaign.id, pending_only=True)
    with services.store.transaction() as db:  # ann's decision is being carried out
        row = db.get(ReviewItem, item.id)
        assert row is not None
        row.status = "deciding"
    with pytest.raises(ReviewError, match="being decided or was decided already"):
        services.operator_actions("bea").decide_review(item.id, "offboard", "retire it")
    assert services.machines.get("svc-c").status == "active"
