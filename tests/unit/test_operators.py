"""Roles are the domain's: every front end gets the same answer, read afresh for each action."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.domain.operators import OperatorSignedOut, Role, RoleMissing
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
