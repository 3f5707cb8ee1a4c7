"""Roles are the domain's: every front end gets the same answer, read afresh for each action;
the events of an operator's action name them, the role that allowed it and their session."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.domain.approvals import ApprovalError
from gateway.domain.audit.trail import Trail
from gateway.domain.machines.registry import ScopeTarget
from gateway.domain.operators import (
    ALL_ROLES,
    ActionContext,
    LocalAdmin,
    OperatorActions,
    OperatorSignedOut,
    Role,
    RoleMissing,
    roles_for,
)
from gateway.services import GatewayServices
from tests.support.console import add_person, console_services


@pytest.fixture()
def services(tmp_path: Path) -> Iterator[GatewayServices]:
    opened = console_services(tmp_path)
    yield opened
    opened.close()


def open_request(services: GatewayServices) -> int:
    return services.requests.create(
        user="alice", target="web01", account="root", rule=services.config.rules[0],
        reason="rotate the backup key", source="10.0.0.1",
    ).id  # fmt: skip


def test_each_action_needs_its_role_and_a_refusal_changes_nothing(
    services: GatewayServices,
) -> None:
    add_person(services, "alice", "ops")
    add_person(services, "ann", "auditors")
    add_person(services, "bob", "approvers")
    request_id = open_request(services)
    auditor = services.operator_actions("ann")
    assert auditor.operator.roles == frozenset({Role.AUDITOR})
    assert [r.id for r in auditor.pending_requests()] == [request_id]  # auditors may look
    with pytest.raises(RoleMissing, match="You need the approver role to approve requests"):
        auditor.approve(request_id, "looks fine")
    assert services.requests.get(request_id).status == "pending"
    with pytest.raises(RoleMissing, match="admin role to disable or enable users"):
        auditor.set_user_disabled("alice", True)
    assert not services.users.get("alice").disabled  # type: ignore[union-attr]
    approver = services.operator_actions("bob")
    with pytest.raises(RoleMissing, match="admin or auditor role to see live sessions"):
        approver.live_sessions()
    assert approver.approve(request_id, "ok").status == "approved"


def test_roles_follow_group_changes_at_once(services: GatewayServices) -> None:
    add_person(services, "alice", "ops")
    add_person(services, "carl", "pamgate-admins")
    admin = services.operator_actions("carl")
    admin.set_user_disabled("alice", True)
    assert services.users.get("alice").disabled  # type: ignore[union-attr]
    services.users.set_groups("carl", ["auditors"], actor="tests")
    with pytest.raises(RoleMissing):
        admin.set_user_disabled("alice", False)
    assert services.users.get("alice").disabled  # type: ignore[union-attr]


def test_a_disabled_operator_can_do_nothing(services: GatewayServices) -> None:
    add_person(services, "alice", "ops")
    add_person(services, "bob", "approvers")
    request_id = open_request(services)
    approver = services.operator_actions("bob")
    services.users.set_disabled("bob", True, actor="tests")
    with pytest.raises(OperatorSignedOut, match="bob was disabled"):
        approver.pending_requests()
    with pytest.raises(OperatorSignedOut):
        approver.approve(request_id, "ok")
    assert services.requests.get(request_id).status == "pending"


# -- every role boundary, for every action the CLI and the SSH administration use ----------

#: A well-formed public key (the tests' target host key): accepted as a user's key.
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFmTjzR9GHjvjKJTd3OAMN9YLhGXgOG7r3DujrQ3pqVP"
NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


@dataclass
class World:
    """A gateway with one person per role, a pending request, a grant, a break-glass
    case and an NHI."""

    services: GatewayServices
    request_id: int
    grant_id: int
    case_id: int

    def actions(self, name: str, session: str | None = None) -> OperatorActions:
        return self.services.operator_actions(name, context=ActionContext(via_session=session))


@pytest.fixture()
def world(services: GatewayServices) -> World:
    return populate(services)


@pytest.fixture(scope="module")
def unchanging_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One world for every refusal: each test checks that nothing changed (argon2 makes
    people slow to create)."""
    opened = console_services(tmp_path_factory.mktemp("refusals"))
    yield populate(opened)
    opened.close()


def populate(services: GatewayServices) -> World:
    for name, groups in (("alice", ("ops",)), ("ann", ("auditors",)), ("bob", ("approvers",)),
                         ("carol", ()), ("dave", ("pamgate-admins",))):  # fmt: skip
        add_person(services, name, *groups)
    granted = open_request(services)
    services.requests.approve(granted, "bob")
    case, _ = services.breakglass.invoke(
        user="alice", target="web01", account="root", rule=services.config.rules[0],
        justification="database down, pager INC-7 says restart now", source="10.0.0.1",
    )  # fmt: skip
    services.machines.add(
        "svc-a", actor="tests", kind="service-account", owner="o", tech_owner="t", purpose="p",
        targets=[ScopeTarget("web01", "root")], commands=["uptime"],
    )  # fmt: skip
    grant_id = services.requests.get(granted).grant_id
    assert grant_id is not None
    return World(services, open_request(services), grant_id, case.id)


def state(services: GatewayServices) -> tuple[object, ...]:
    """Everything an operator could change, and both trails without refusals."""
    trails = tuple(
        (r.action, r.actor, r.target, r.details)
        for trail in Trail
        for r in services.audit.events(trail)
        if r.action != "operator.refused"
    )
    return (
        services.users.list_users(), services.machines.list(),
        services.requests.list(), services.requests.list_grants(),
        services.breakglass.list(), services.machine_revocations.revocations(),
        services.machine_revocations.outstanding(), services.ledger.live(), trails,
    )  # fmt: skip


Act = Callable[[OperatorActions, World], object]

#: (who tries, the roles the refusal names, what they try, the attempt): changes and
#: audited reads. An auditor cannot change identities or decide requests; an approver
#: cannot read the evidence; someone with no role can do nothing.
REFUSED_CHANGES: list[tuple[str, str, str, Act]] = [
    ("ann", "admin", "add users",
     lambda a, w: a.add_user("newbie", password="a long password")),
    ("ann", "admin", "disable or enable users", lambda a, w: a.set_user_disabled("alice", True)),
    ("ann", "admin", "reset second factors", lambda a, w: a.reset_mfa("alice")),
    ("ann", "admin", "change users' groups", lambda a, w: a.set_user_groups("ann", ["x"])),
    ("ann", "admin", "set passwords", lambda a, w: a.set_password("alice", "a long password")),
    ("ann", "admin", "register users' keys", lambda a, w: a.add_user_key("alice", PUBLIC_KEY)),
    ("ann", "admin", "unlock users", lambda a, w: a.unlock_user("alice")),
    ("ann", "admin", "register NHIs",
     lambda a, w: a.add_machine("svc-b", kind="agent", owner="o", tech_owner="t", purpose="p",
                                targets=[ScopeTarget("web01", "root")], commands=["uptime"])),
    ("ann", "admin", "suspend or resume NHIs",
     lambda a, w: a.set_machine_status("svc-a", "suspended", "")),
    ("ann", "admin", "offboard NHIs", lambda a, w: a.offboard_machine("svc-a", "")),
    ("ann", "admin", "revoke certificates",
     lambda a, w: a.revoke_certificates(reason="", serial=9)),
    ("ann", "admin", "issue machine certificates",
     lambda a, w: a.issue_certificate("svc-a", PUBLIC_KEY, 60)),
    ("ann", "admin", "make join tokens",
     lambda a, w: a.create_join_token("svc-a", ttl_seconds=60, uses=1)),
    ("ann", "admin", "revoke grants", lambda a, w: a.revoke_grant(w.grant_id, "incident")),
    ("bob", "admin", "terminate sessions", lambda a, w: a.terminate_session("f00d", "stop")),
    ("ann", "approver", "approve requests", lambda a, w: a.approve(w.request_id, "fine")),
    ("dave", "approver", "deny requests", lambda a, w: a.deny(w.request_id, "no")),
    ("carol", "admin or approver or auditor", "review break-glass cases",
     lambda a, w: a.review_breakglass(w.case_id, "justified", "it was down")),
    ("bob", "admin or auditor", "replay recordings",
     lambda a, w: a.open_recording("f00d", purpose="replayed")),
    ("bob", "admin or auditor", "export recordings",
     lambda a, w: a.export_recording_to("f00d", io.StringIO())),
]  # fmt: skip

#: Reads: refused the same way, and not audited (the console asks for them every second).
REFUSED_READS: list[tuple[str, str, str, Act]] = [
    ("bob", "admin or auditor", "read the audit trails", lambda a, w: a.audit_reader()),
    ("bob", "admin or auditor", "verify the audit trails",
     lambda a, w: a.verify_trail(Trail.HUMAN)),
    ("bob", "admin or auditor", "read the audit trails",
     lambda a, w: a.file_transfers(user=None, target=None, since=None, until=None,
                                   include_opened=False)),
    ("bob", "admin or auditor", "read the audit checkpoints", lambda a, w: a.read_checkpoints()),
    ("bob", "admin or auditor", "sign audit checkpoints", lambda a, w: a.sign_checkpoints()),
    ("bob", "admin or auditor", "see recordings",
     lambda a, w: a.recordings(user=None, target=None, since=None, limit=10)),
    ("bob", "admin or auditor", "search recordings", lambda a, w: a.search_commands("ls")),
    ("bob", "admin or auditor", "see a session's commands", lambda a, w: a.commands("f00d")),
    ("bob", "admin or auditor", "verify recordings", lambda a, w: a.verify_recording("f00d")),
    ("bob", "admin or auditor", "see identities", lambda a, w: a.users()),
    ("bob", "admin or auditor", "see identities", lambda a, w: a.machine("svc-a")),
    ("bob", "admin or auditor", "read the machine revocations",
     lambda a, w: a.write_krl(Path("unused.krl"))),
    ("bob", "admin or auditor", "check the policy",
     lambda a, w: a.policy_decision("alice", "web01", None, source="10.0.0.1", at=NOW)),
    ("carol", "admin or approver or auditor", "see requests",
     lambda a, w: a.requests(pending_only=False)),
    ("carol", "admin or approver or auditor", "see grants",
     lambda a, w: a.grants(active_only=False)),
    ("carol", "admin or approver or auditor", "see break-glass cases",
     lambda a, w: a.breakglass_cases()),
]  # fmt: skip


@pytest.mark.parametrize(
    ("who", "needed", "to_do", "act"), REFUSED_CHANGES,
    ids=[f"{who}-cannot-{to_do}" for who, _, to_do, _ in REFUSED_CHANGES],
)  # fmt: skip
def test_a_change_without_its_role_is_refused_audited_and_changes_nothing(
    unchanging_world: World, who: str, needed: str, to_do: str, act: Act
) -> None:
    world = unchanging_world
    before = state(world.services)
    with pytest.raises(RoleMissing, match=rf"^You need the {needed} role to {to_do} \(you are"):
        act(world.actions(who, session="ssh-7"), world)
    assert state(world.services) == before
    refused = list(world.services.audit.events(Trail.HUMAN))[-1]
    assert (refused.action, refused.outcome, refused.actor) == ("operator.refused", "refused", who)
    assert f"You need the {needed} role" in refused.reason
    assert json.loads(refused.details)["via_session"] == "ssh-7"


@pytest.mark.parametrize(
    ("who", "needed", "to_do", "act"), REFUSED_READS,
    ids=[f"{who}-cannot-{to_do}" for who, _, to_do, _ in REFUSED_READS],
)  # fmt: skip
def test_a_read_without_its_role_is_refused(
    unchanging_world: World, who: str, needed: str, to_do: str, act: Act
) -> None:
    world = unchanging_world
    head = world.services.audit.head(Trail.HUMAN)
    with pytest.raises(RoleMissing, match=rf"^You need the {needed} role to {to_do} \(you are"):
        act(world.actions(who), world)
    assert world.services.audit.head(Trail.HUMAN) == head


def test_events_name_the_operator_the_role_that_allowed_it_and_the_session(
    world: World,
) -> None:
    services = world.services
    admin, approver, auditor = (world.actions(name, session=f"ssh-{name}")
                                for name in ("dave", "bob", "ann"))  # fmt: skip
    admin.set_user_disabled("carol", True)
    admin.unlock_user("alice")  # the lockout service builds its own event: the same facts
    admin.set_machine_status("svc-a", "suspended", "leaked token")
    approved = approver.approve(world.request_id, "go")
    assert approved.status == "approved"
    auditor.review_breakglass(world.case_id, "justified", "the database was down")
    events = {(r.action, r.actor): r for trail in Trail for r in services.audit.events(trail)}
    for action, actor, authority in (
        ("user.disabled", "dave", "role:admin"),
        ("user.unlocked", "dave", "role:admin"),
        ("machine.suspended", "dave", "role:admin"),
        # Deciding keeps the authority the requests service gives: the rule, then the request.
        ("request.approved", "bob", "policy:ops-web01"),
        ("grant.created", "bob", f"request:{world.request_id}"),
        ("breakglass.reviewed", "ann", f"breakglass:{world.case_id}"),
    ):
        event = events[(action, actor)]
        assert event.authority == authority
        assert json.loads(event.details)["via_session"] == f"ssh-{actor}"
    assert events[("machine.suspended", "dave")].trail == "machine"
    # The requests service stores the plain name (a str, not the operator object).
    assert services.requests.get(world.request_id).approvals == ("bob",)
    # Without a session, there is no via_session.
    world.actions("dave").set_user_disabled("carol", False)
    enabled = list(services.audit.events(Trail.HUMAN))[-1]
    assert enabled.action == "user.enabled" and "via_session" not in json.loads(enabled.details)


def test_an_admin_reads_what_auditors_read_and_an_auditor_reads_the_evidence(
    world: World,
) -> None:
    for name in ("dave", "ann"):
        actions = world.actions(name)
        assert actions.audit_reader().head(Trail.HUMAN)[0] > 0
        assert actions.verify_trail(Trail.HUMAN).ok
        assert [m.name for m in actions.machines()] == ["svc-a"]
        assert "alice" in [u.name for u in actions.users()]
        assert actions.recordings(user=None, target=None, since=None, limit=10) == []
    assert [r.id for r in world.actions("bob").requests(pending_only=True)] == [world.request_id]


def test_the_local_administrator_holds_every_role_and_is_named_so(world: World) -> None:
    services = world.services
    local = services.local_admin_actions(LocalAdmin("root", "gw1"))
    assert local.operator.roles == ALL_ROLES and local.operator.local
    assert local.name == "local-admin:root@gw1"
    local.set_user_disabled("carol", True)
    local.revoke_grant(world.grant_id, "incident")
    assert local.audit_reader().tail(Trail.HUMAN, 1)[0].action == "grant.revoked"
    records = [r for r in services.audit.events(Trail.HUMAN)
               if r.action in ("user.disabled", "grant.revoked")]  # fmt: skip
    assert [(r.actor, r.authority) for r in records] == [
        ("local-admin:root@gw1", "local-admin"), ("local-admin:root@gw1", "local-admin")
    ]  # fmt: skip
    # Deciding is for pamgate users in the rule's approver groups: the service says so.
    with pytest.raises(ApprovalError, match="local-admin:root@gw1 is not an enabled user"):
        local.approve(world.request_id, "I am root")
    assert services.requests.get(world.request_id).status == "pending"


def test_a_rules_approver_groups_give_the_approver_role(tmp_path: Path) -> None:
    extra = """
[[rules]]
id = "ops-db"
groups = ["ops"]
targets = ["web01"]
mode = "approval"
approver_groups = ["leads"]
"""
    opened = console_services(tmp_path, extra)
    try:
        add_person(opened, "lena", "leads")
        assert opened.operator_actions("lena").operator.roles == frozenset({Role.APPROVER})
        assert roles_for(["leads", "auditors"], opened.config) == {Role.APPROVER, Role.AUDITOR}
        assert roles_for(["ops"], opened.config) == frozenset()
    finally:
        opened.close()


def test_an_unknown_operator_can_do_nothing(services: GatewayServices) -> None:
    with pytest.raises(OperatorSignedOut, match="there is no pamgate user named 'mallory'"):
        services.operator_actions("mallory").users()
