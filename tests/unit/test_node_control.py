"""Reload and drain requests through the node registry, the policy a reload adopts, and every
node's signed checkpoints in the database."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import update

from gateway.config import load_config
from gateway.domain.audit.checkpoints import CheckpointBook, CheckpointError, ensure_signing_key
from gateway.domain.audit.trail import ActorType, AuditEvent, AuditLog, Trail
from gateway.domain.node_control import NodeControl, adopt_policy, read_for_reload
from gateway.domain.node_identity import policy_digest
from gateway.domain.nodes import NodeRegistry
from gateway.domain.policy import AccessContext, Mode, Policy
from gateway.domain.sessions import SessionLedger
from gateway.errors import ConfigError, PamgateError
from gateway.store.database import Store
from gateway.store.models import AuditCheckpointRecord
from tests.support.config import TARGET

ALLOW_OPS = """
[[rules]]
id = "ops-web"
groups = ["ops"]
targets = ["web01"]
mode = "allow"
"""
DENY_OPS = """
[[rules]]
id = "no-ops"
groups = ["ops"]
targets = ["web01"]
mode = "deny"
"""


def decide(policy: Policy) -> Mode:
    context = AccessContext("ann", ("ops",), "web01", "root", "10.0.0.1", datetime.now(UTC))
    return policy.evaluate(context).mode


def test_a_reload_adopts_the_rules_in_place_and_names_what_needs_a_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "pamgate.toml"
    path.write_text(TARGET + ALLOW_OPS)
    running = load_config(path)
    policy = Policy(running)  # built once, as the node builds it
    assert decide(policy) == Mode.ALLOW
    path.write_text("[listeners.human]\nport = 2300\n" + TARGET + ALLOW_OPS + DENY_OPS)
    reload = read_for_reload(running)
    assert decide(policy) == Mode.ALLOW, "reading the file changes nothing by itself"
    assert reload.old_digest == policy_digest(running) != reload.new_digest
    assert reload.restart_needed == ("listeners",)
    adopt_policy(running, reload)
    assert decide(policy) == Mode.DENY
    assert policy_digest(running) == reload.new_digest
    assert running.listeners.human.port != 2300, "listeners are read at start only"


def test_an_invalid_file_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "pamgate.toml"
    path.write_text(TARGET + ALLOW_OPS)
    running = load_config(path)
    before = policy_digest(running)
    path.write_text(TARGET + ALLOW_OPS.replace('targets = ["web01"]', 'targets = ["web02"]'))
    with pytest.raises(ConfigError, match="web02"):
        read_for_reload(running)
    assert policy_digest(running) == before and decide(Policy(running)) == Mode.ALLOW


def registered(store: Store, name: str) -> tuple[NodeControl, AuditLog]:
    audit = AuditLog(store)
    NodeRegistry(store, audit, SessionLedger(store, audit, name), name).register()
    return NodeControl(store, audit, name), audit


def test_requests_reach_the_named_node_only_and_a_restart_clears_them(store: Store) -> None:
    control_a, audit = registered(store, "node-a")
    control_b, _ = registered(store, "node-b")
    control_a.request_reload("node-b", actor="root", authority="local-admin")
    deadline, _ = control_a.request_drain("node-b", 60, actor="root", authority="local-admin")
    assert control_a.requests().reload is False and control_a.requests().drain_deadline is None
    asked = control_b.requests()
    assert asked.reload and asked.drain_deadline == deadline
    with pytest.raises(PamgateError, match="no node named 'node-z'"):
        control_a.request_drain("node-z", 60, actor="root", authority="local-admin")
    with pytest.raises(PamgateError, match="cannot be negative"):
        control_a.request_drain("node-b", -1, actor="root", authority="local-admin")
    # The next process called node-b starts with no request of the previous one's.
    NodeRegistry(store, audit, SessionLedger(store, audit, "node-b"), "node-b").register()
    assert control_b.requests() == type(asked)()
    actions = [(r.action, r.actor, r.target) for r in audit.events(Trail.HUMAN)]
    assert ("node.reload_requested", "root", "node:node-b") in actions
    assert ("node.drain_requested", "root", "node:node-b") in actions


def book(store: Store, tmp_path: Path, node: str) -> CheckpointBook:
    key = tmp_path / "keys" / "audit_signing"
    ensure_signing_key(key)
    return CheckpointBook(
        AuditLog(store), key, tmp_path / node / "checkpoints.jsonl", node, store=store
    )


def test_each_nodes_checkpoints_are_rows_of_its_own_that_any_node_verifies(
    store: Store, tmp_path: Path
) -> None:
    book_a, book_b = book(store, tmp_path, "node-a"), book(store, tmp_path, "node-b")
    AuditLog(store).record(Trail.HUMAN, AuditEvent(actor="x", actor_type=ActorType.HUMAN,
                                                   action="auth.failure"))  # fmt: skip
    book_a.checkpoint()
    AuditLog(store).record(Trail.HUMAN, AuditEvent(actor="y", actor_type=ActorType.HUMAN,
                                                   action="auth.failure"))  # fmt: skip
    book_b.checkpoint()
    # node-a's file holds node-a's only; the database holds both, each counted once.
    found = book_a.read()
    assert sorted({c.node for c in found}) == ["node-a", "node-b"]
    assert len(found) == 2 * len(Trail)
    assert all(book_a.problems(trail, found) is None for trail in Trail)


@pytest.mark.parametrize("column", ["hash", "seq", "node", "signature"])
def test_an_altered_checkpoint_row_fails(store: Store, tmp_path: Path, column: str) -> None:
    node_book = book(store, tmp_path, "node-a")
    node_book.checkpoint()
    forged: object = {
        "hash": "e" * 64, "seq": 99, "node": "node-z",
        "signature": base64.b64encode(b"\0" * 64).decode(),
    }[column]  # fmt: skip
    with store.transaction() as db:
        db.execute(update(AuditCheckpointRecord).where(AuditCheckpointRecord.id == 1)
                   .values({column: forged}))  # fmt: skip
    with pytest.raises(CheckpointError, match="not validly signed"):
        book(store, tmp_path, "node-b").read()


def test_a_forged_checkpoint_row_fails(store: Store, tmp_path: Path) -> None:
    book(store, tmp_path, "node-a").checkpoint()
    with store.transaction() as db:
        db.add(AuditCheckpointRecord(
            node="node-x", trail="human", seq=1, hash="f" * 64, ts="2026-12-07T00:00:00Z",
            signature=base64.b64encode(b"\1" * 64).decode(),
        ))  # fmt: skip
    with pytest.raises(CheckpointError, match="node node-x"):
        book(store, tmp_path, "node-a").read()
