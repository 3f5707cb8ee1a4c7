"""Node registry: heartbeats, takeover of silent nodes, per-node crash recovery (no sockets)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.config import GatewayConfig, load_config
from gateway.domain.audit.trail import AuditLog, Trail
from gateway.domain.health import DeploymentStatus
from gateway.domain.node_identity import NodeIdentity, node_identity
from gateway.domain.nodes import NodeKeysDiffer, NodeNameInUse, NodeRegistry
from gateway.domain.sessions import SessionLedger, SessionStart
from gateway.errors import ConfigError, PamgateError
from gateway.store.database import Store
from gateway.store.models import GatewayNodeRecord


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


def node(store: Store, name: str, clock: Clock) -> tuple[NodeRegistry, SessionLedger]:
    audit = AuditLog(store, clock=clock)
    ledger = SessionLedger(store, audit, name, clock=clock)
    return NodeRegistry(store, audit, ledger, name, timeout_seconds=15, clock=clock), ledger


def open_session(ledger: SessionLedger, user: str) -> str:
    session_id = ledger.new_session_id()
    ledger.open(session_id, SessionStart("human", user, "web01", "root", "10.0.0.1",
                                         "policy:admins", "shell"))  # fmt: skip
    return session_id


def test_a_silent_node_is_taken_over_once_and_only_its_sessions_end(
    store: Store, clock: Clock
) -> None:
    a, ledger_a = node(store, "node-a", clock)
    b, ledger_b = node(store, "node-b", clock)
    c, _ = node(store, "node-c", clock)
    for registry in (a, b, c):
        registry.register()
    on_a, on_b = open_session(ledger_a, "alice"), open_session(ledger_b, "bob")
    clock.now += 10
    a.heartbeat()
    c.heartbeat()
    assert a.take_over_dead() == []  # node-b is 10 s silent: not yet
    clock.now += 6
    taken = a.take_over_dead()
    assert [(t.node, t.interrupted) for t in taken] == [("node-b", [on_b])]
    assert c.take_over_dead() == []  # already taken over: never twice
    assert ledger_a.get(on_b).status == "interrupted"
    assert ledger_a.get(on_a).status == "live"
    # If node-b was only cut off, its relay is told to end the session.
    assert "node-b stopped answering" in (ledger_b.termination_requested(on_b) or "")
    listed = {n.name: n for n in a.list()}
    assert listed["node-b"].status == "dead" and listed["node-b"].taken_over_by == "node-a"
    assert listed["node-a"].live_sessions == 1 and listed["node-b"].live_sessions == 0
    actions = [(r.action, r.actor) for r in AuditLog(store).events(Trail.HUMAN)]
    assert actions.count(("session.interrupted", "gateway:node-a")) == 1
    assert actions.count(("node.taken_over", "gateway:node-a")) == 1
    assert AuditLog(store).verify(Trail.HUMAN).ok
    # node-b comes back: told it had been taken for dead, and it is up again.
    assert b.heartbeat() is False
    assert {n.name: n.status for n in a.list()}["node-b"] == "up"


def test_a_cleanly_stopped_node_is_never_taken_over(store: Store, clock: Clock) -> None:
    a, _ = node(store, "node-a", clock)
    b, _ = node(store, "node-b", clock)
    a.register()
    b.register()
    b.stopped()
    clock.now += 60
    assert a.take_over_dead() == []
    assert {n.name: n.status for n in a.list()}["node-b"] == "stopped"


def test_startup_recovery_marks_only_this_nodes_sessions(store: Store, clock: Clock) -> None:
    _, ledger_a = node(store, "node-a", clock)
    _, ledger_b = node(store, "node-b", clock)
    on_a, on_b = open_session(ledger_a, "alice"), open_session(ledger_b, "bob")
    assert ledger_a.mark_interrupted() == [on_a]
    assert ledger_b.get(on_b).status == "live"


def test_a_node_name_used_by_a_running_node_is_refused(store: Store, clock: Clock) -> None:
    first, _ = node(store, "node-a", clock)
    first.register()
    # Another process (still running) claims the same name.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        store_row_pid(store, "node-a", other.pid)
        again, _ = node(store, "node-a", clock)
        with pytest.raises(NodeNameInUse, match="give each node its own"):
            again.register()
        clock.now += 16  # silent past the timeout: the name may be reused
        again.register()
    finally:
        other.kill()
        other.wait()
    assert {n.name: n.pid for n in first.list()}["node-a"] == os.getpid()


def store_row_pid(store: Store, name: str, pid: int) -> None:
    with store.transaction() as db:
        row = db.get(GatewayNodeRecord, name)
        assert row is not None
        row.pid = pid


def test_node_settings_are_checked_and_the_name_defaults_to_the_host(tmp_path: Path) -> None:
    path = tmp_path / "pamgate.toml"
    path.write_text("[node]\nheartbeat_interval_seconds = 5\nheartbeat_timeout_seconds = 10\n")
    with pytest.raises(ConfigError, match="at least 3 heartbeat intervals"):
        load_config(path)
    path.write_text("[node]\nheartbeat_timeout_seconds = 30\n")
    config = load_config(path)
    assert config.node_name == socket.gethostname()[:64] or config.node_name.startswith("node-")
    path.write_text('[node]\nname = "gw 1"\n')
    with pytest.raises(ConfigError, match="node.name"):
        load_config(path)


def test_status_is_unhealthy_with_a_dead_or_silent_node_until_it_is_forgotten(
    store: Store, clock: Clock
) -> None:
    a, ledger_a = node(store, "node-a", clock)
    b, ledger_b = node(store, "node-b", clock)
    gone, _ = node(store, "node-gone", clock)
    for registry in (a, b, gone):
        registry.register()
    gone.stopped()
    open_session(ledger_b, "bob")

    def status() -> DeploymentStatus:
        return DeploymentStatus(store.url, True, 1.0, store.schema_state(), nodes=a.list(),
                                checked_at=datetime.fromtimestamp(clock.now, UTC))  # fmt: skip

    assert status().healthy(15)  # a cleanly stopped node is no fault
    with pytest.raises(PamgateError, match="node-a is up .*stop it first"):
        b.forget("node-a", actor="local-admin:root@gw", authority="local-admin")
    clock.now += 20
    a.heartbeat()
    silent = status()
    assert not silent.healthy(15)
    assert silent.node_problems(15) == ["node node-b is silent (20 s without a heartbeat)"]
    assert a.take_over_dead()[0].node == "node-b"
    dead = status()
    assert not dead.healthy(15)
    assert "unhealthy: node node-b is dead: bring it back, or retire it with 'pamgate node " \
        "forget node-b'" in dead.lines(15)  # fmt: skip
    with pytest.raises(PamgateError, match="no node named 'node-x'"):
        a.forget("node-x", actor="local-admin:root@gw", authority="local-admin")
    for retired in ("node-b", "node-gone"):
        a.forget(retired, actor="local-admin:root@gw", authority="local-admin")
    assert [n.name for n in a.list()] == ["node-a"]
    assert status().healthy(15)
    forgotten = [r for r in AuditLog(store).events(Trail.HUMAN) if r.action == "node.forgotten"]
    assert [r.target for r in forgotten] == ["node:node-b", "node:node-gone"]
    assert all(r.actor == "local-admin:root@gw" for r in forgotten)


def test_a_node_with_live_sessions_cannot_be_forgotten(store: Store, clock: Clock) -> None:
    a, _ = node(store, "node-a", clock)
    b, ledger_b = node(store, "node-b", clock)
    a.register()
    b.register()
    open_session(ledger_b, "bob")
    with store.transaction() as db:  # dead by the registry's word, but not taken over
        row = db.get(GatewayNodeRecord, "node-b")
        assert row is not None
        row.status = "dead"
    with pytest.raises(PamgateError, match="still has 1 live sessions"):
        a.forget("node-b", actor="local-admin:root@gw", authority="local-admin")
    assert {n.name for n in a.list()} == {"node-a", "node-b"}


def identity(upstream: str = "SHA256:one", policy: str = "a" * 64) -> NodeIdentity:
    return NodeIdentity({"upstream CA": upstream, "machine CA": "SHA256:m"}, policy)


def test_a_node_with_other_keys_is_refused_and_policy_drift_is_audited(
    store: Store, clock: Clock
) -> None:
    a, _ = node(store, "node-a", clock)
    b, _ = node(store, "node-b", clock)
    a.register(identity())
    with pytest.raises(NodeKeysDiffer) as refused:
        b.register(identity(upstream="SHA256:two"))
    assert str(refused.value) == (
        "this node's keys differ from running node node-a's (upstream CA: SHA256:two here, "
        "SHA256:one there): copy DATA_DIR/keys from a running node before starting this one"
    )
    assert [n.name for n in a.list()] == ["node-a"]  # nothing recorded for node-b
    b.register(identity(policy="b" * 64))  # same keys, other rules: allowed, but reported
    drift = [r for r in AuditLog(store).events(Trail.HUMAN) if r.action == "node.policy_drift"]
    assert len(drift) == 1 and drift[0].target == "node:node-b"
    assert "differ from node-a's" in drift[0].reason

    def status() -> DeploymentStatus:
        return DeploymentStatus(store.url, True, 1.0, store.schema_state(), nodes=a.list(),
                                checked_at=datetime.fromtimestamp(clock.now, UTC))  # fmt: skip

    assert status().node_problems(15) == [
        "the nodes' targets and rules differ (policy sha256: node-a aaaaaaaaaaaa, "
        "node-b bbbbbbbbbbbb)"
    ]
    # A stopped node's keys no longer count: a replacement with new keys may start.
    a.stopped()
    b.stopped()
    c, _ = node(store, "node-c", clock)
    c.register(identity(upstream="SHA256:three"))


def test_identity_reads_fingerprints_as_ssh_keygen_prints_them(tmp_path: Path) -> None:
    key = tmp_path / "upstream_ca"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    printed = subprocess.run(["ssh-keygen", "-lf", f"{key}.pub"], capture_output=True,
                             text=True, check=True).stdout.split()[1]  # fmt: skip
    config = GatewayConfig()
    mine = node_identity(config, tmp_path)
    assert mine.keys == {"upstream CA": printed}
    assert mine.policy_digest == node_identity(config, tmp_path).policy_digest
    changed = GatewayConfig.model_validate({"target_groups": {"web": []}})
    assert node_identity(changed, tmp_path).policy_digest != mine.policy_digest
