"""Rolling changes to running nodes, with real ``pamgate serve`` processes and stock ssh:
a policy reload (SIGHUP, ``pamgate node reload``) under live sessions, a refused reload,
a drain (``pamgate node drain``) of this node and of another one through the database,
and every node's audit checkpoints."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import select, update

from gateway.config import load_config
from gateway.devtools.openssh_target import free_port
from gateway.domain.audit.trail import Trail
from gateway.services import GatewayServices
from gateway.store.models import AuditCheckpointRecord
from tests.support.database import fresh_database, postgres_server_url
from tests.support.gateway import Gateway, launch_gateway, wait_for_log
from tests.support.nodes import (
    OutputLines,
    add_node,
    healthz,
    node_records,
    wait_for_records,
    wait_for_text,
)

pytestmark = [pytest.mark.openssh]

DENY_MORTAL = """
[[rules]]
id = "no-mortal"
groups = ["admins"]
targets = ["mortal"]
mode = "deny"
"""


def node_config(name: str, metrics_port: int | None = None, workers: int = 1) -> str:
    text = f'\n[node]\nname = "{name}"\nheartbeat_interval_seconds = 0.5\nworkers = {workers}\n'
    if metrics_port is not None:
        text += f"\n[metrics]\nport = {metrics_port}\n"
    return text


@pytest.fixture()
def solo(tmp_path: Path) -> Iterator[Gateway]:
    with launch_gateway(tmp_path, node_config("solo")) as gateway:
        yield gateway


#: One process, and two relay worker processes that must each follow the node's process.
RELAYS = pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])


def live_ssh(gateway: Gateway, destination: str, command: str) -> tuple[
    subprocess.Popen[bytes], OutputLines, OutputLines
]:  # fmt: skip
    """A new user's ssh running ``command``, once it printed ``started``."""
    process = gateway.start_ssh(gateway.make_user(), destination, f"echo started; {command}")
    out, err = OutputLines(process.stdout), OutputLines(process.stderr)
    out.wait_for("started")
    return process, out, err


@contextmanager
def services_of(gateway: Gateway) -> Iterator[GatewayServices]:
    services = GatewayServices.open(load_config(gateway.config_path))
    try:
        yield services
    finally:
        services.close()


def policy_of(gateway: Gateway, node: str) -> str | None:
    with services_of(gateway) as services:
        return next(n.policy_digest for n in services.nodes.list() if n.name == node)


@RELAYS
def test_a_sighup_reload_keeps_live_sessions_and_new_sessions_follow_the_new_rules(
    tmp_path: Path, workers: int
) -> None:
    with launch_gateway(tmp_path, node_config("solo", workers=workers)) as solo:
        sighup_reload_under_live_sessions(solo)


def sighup_reload_under_live_sessions(solo: Gateway) -> None:
    kept, kept_out, _ = live_ssh(solo, "web01", "sleep 6; echo survived")
    withdrawn, _, withdrawn_err = live_ssh(solo, "mortal", "sleep 60")
    before = policy_of(solo, "solo")
    solo.config_path.write_text(solo.config_path.read_text() + DENY_MORTAL)
    signalled = time.monotonic()
    solo.process.send_signal(signal.SIGHUP)
    assert "policy reloaded (SIGHUP)" in wait_for_log(solo, "policy reloaded (SIGHUP)", 10)
    print(f"SIGHUP to 'policy reloaded' in the log: {time.monotonic() - signalled:.2f} s")

    refused = solo.run_ssh(solo.make_user(), "mortal", "echo in")
    assert refused.returncode != 0 and b"in\n" not in refused.stdout
    assert b"no-mortal" in refused.stderr, refused.stderr
    allowed = solo.run_ssh(solo.make_user(), "web01", "echo in")
    assert allowed.returncode == 0 and allowed.stdout == b"in\n", allowed.stderr
    # The live session the new rule forbids is ended by the lane's watch, with the reason.
    withdrawn.wait(timeout=15)
    print(f"SIGHUP to the withdrawn session's end: {time.monotonic() - signalled:.2f} s")
    withdrawn_err.wait_for(r"access is no longer allowed: .*rule 'no-mortal' \(deny\)")
    # The one it still allows runs to its end.
    assert kept.wait(timeout=20) == 0
    kept_out.wait_for("survived")

    reloaded = node_records(solo, "node.reloaded", "solo")
    assert len(reloaded) == 1
    details = json.loads(reloaded[0].details)
    after = policy_of(solo, "solo")
    assert details["old_policy_sha256"] == before != after == details["new_policy_sha256"]
    assert details["trigger"] == "SIGHUP" and details["restart_needed"] == []


def test_an_invalid_config_on_reload_changes_nothing_and_is_audited(solo: Gateway) -> None:
    live, live_out, _ = live_ssh(solo, "web01", "sleep 3; echo survived")
    before = policy_of(solo, "solo")
    good, log_path = solo.config_path.read_text(), solo.log_path
    solo.config_path.write_text(good + DENY_MORTAL.replace('["mortal"]', '["nowhere"]'))
    solo.process.send_signal(signal.SIGHUP)
    log = wait_for_text(log_path, "reload refused, the running policy stays")
    assert "reload refused, the running policy stays" in log and "'nowhere'" in log
    failed = wait_for_records(solo, "node.reload_failed", "solo")  # (logged first)
    assert len(failed) == 1 and "nowhere" in failed[0].reason and failed[0].outcome == "failure"
    # On this host the command reads the same file: it names the problem and asks nothing.
    reload = solo.cli("node", "reload")
    assert reload.returncode == 2 and "'nowhere' matches nothing" in reload.stderr
    assert not node_records(solo, "node.reload_requested", "solo")
    assert not node_records(solo, "node.reloaded", "solo")
    solo.config_path.write_text(good)  # (the test reads the registry through it)
    assert policy_of(solo, "solo") == before
    # The old rules still apply: mortal is still open to admins.
    allowed = solo.run_ssh(solo.make_user(), "mortal", "echo in")
    assert allowed.returncode == 0 and allowed.stdout == b"in\n", allowed.stderr
    assert live.wait(timeout=20) == 0
    live_out.wait_for("survived")
    # A good file is adopted by the next reload, which names what needs a restart.
    port = solo.port
    solo.config_path.write_text(
        good.replace(f"port = {port}\n", f"port = {port}\nlogin_grace_time_seconds = 30\n", 1)
        + DENY_MORTAL
    )
    reload = solo.cli("node", "reload", "solo")
    assert reload.returncode == 0, reload.stderr
    assert "node solo reloaded its policy" in reload.stdout
    assert "[listeners] changed: it takes effect when the node restarts" in reload.stdout


def test_operators_over_ssh_can_neither_drain_nor_reload_a_node(solo: Gateway) -> None:
    # Approvers (a console role) try the host-only commands through NAME:admin.
    for command in ("node drain solo --deadline 0s", "node reload solo"):
        attempt = solo.run_ssh(solo.make_user(groups=("leads",)), "admin", command)
        assert attempt.returncode != 0
        assert b"works on the gateway host itself" in attempt.stderr, attempt.stderr
    assert not node_records(solo, "node.drain_requested", "solo")
    assert not node_records(solo, "node.reload_requested", "solo")
    assert solo.process.poll() is None
    allowed = solo.run_ssh(solo.make_user(), "web01", "echo in")
    assert allowed.returncode == 0 and allowed.stdout == b"in\n", allowed.stderr


@RELAYS
def test_drain_warns_refuses_ends_at_the_deadline_and_exits_0(tmp_path: Path, workers: int) -> None:
    metrics_port = free_port()
    with launch_gateway(tmp_path, node_config("solo", metrics_port, workers)) as gateway:
        assert healthz(metrics_port)[0] == 200
        live, _, live_err = live_ssh(gateway, "web01", "sleep 120")
        asked = time.monotonic()
        drain = gateway.cli("node", "drain", "solo", "--deadline", "8s")
        assert drain.returncode == 0, drain.stderr
        live_err.wait_for(r"node solo is draining: this session will be ended at")
        print(f"drain asked to the user's warning: {time.monotonic() - asked:.2f} s")
        status, body = healthz(metrics_port)
        assert status == 503 and body["status"] == "draining", body
        refused = gateway.run_ssh(gateway.make_user(), "web01", "echo in")
        assert refused.returncode != 0 and refused.stdout == b""
        assert b"node solo is draining: it takes no new sessions" in refused.stderr
        status_report = gateway.cli("status")
        assert "draining (sessions end by" in status_report.stdout, status_report.stdout
        # The deadline ends the session, and the node stops by itself, cleanly.
        assert gateway.process.wait(timeout=30) == 0
        print(f"drain asked (deadline 8 s) to the node's exit: {time.monotonic() - asked:.2f} s")
        live.wait(timeout=10)
        live_err.wait_for("node drained")
        events = list(gateway.audit.events(Trail.HUMAN))
        # Its last checkpoint, signed as it stopped, is a row of its own that verifies.
        verified = gateway.cli("audit", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "(nodes solo): all agree" in verified.stdout
    refusals = [e for e in events if e.action == "access.refused" and "draining" in e.reason]
    assert len(refusals) == 1
    ends = [e for e in events if e.action == "session.end" and e.reason == "node drained"]
    assert len(ends) == 1
    node_events = [e for e in events if e.target == "node:solo"]
    actions = [e.action for e in node_events]
    assert actions.index("node.drain_requested") < actions.index("node.draining")
    assert actions.index("node.draining") < actions.index("node.drained")
    draining = node_events[actions.index("node.draining")]
    assert json.loads(draining.details)["live_sessions"] == 1


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Gateway]]:
    """Two nodes, node-a and node-b, on one fresh PostgreSQL database."""
    root = tmp_path_factory.mktemp("pair")
    with (
        fresh_database(postgres_server_url()) as url,
        launch_gateway(root, node_config("node-a"), url) as node_a,
    ):
        node_b = add_node(node_a, "node-b", first_name="node-a")
        try:
            yield node_a, node_b
        finally:
            if node_b.process.poll() is None:
                node_b.process.send_signal(signal.SIGTERM)
                node_b.process.wait(timeout=10)


@pytest.mark.postgres
def test_checkpoints_of_two_nodes_verify_and_a_tampered_one_fails(
    pair: tuple[Gateway, Gateway],
) -> None:
    node_a, node_b = pair
    for node in (node_a, node_b, node_a):
        signed = node.cli("audit", "checkpoint")
        assert signed.returncode == 0, signed.stderr
    verified = node_b.cli("audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "(nodes node-a, node-b): all agree" in verified.stdout
    with services_of(node_a) as services:
        with services.store.transaction() as db:
            row = db.scalar(
                select(AuditCheckpointRecord.id)
                .where(AuditCheckpointRecord.node == "node-b")
                .order_by(AuditCheckpointRecord.id)
                .limit(1)
            )
            db.execute(update(AuditCheckpointRecord).where(AuditCheckpointRecord.id == row)
                       .values(seq=AuditCheckpointRecord.seq - 1))  # fmt: skip
        tampered = node_a.cli("audit", "verify")
        assert tampered.returncode == 1
        assert f"checkpoint #{row} of node node-b in the database is not validly signed" in (
            tampered.stderr
        ), tampered.stderr
        with services.store.transaction() as db:
            db.execute(update(AuditCheckpointRecord).where(AuditCheckpointRecord.id == row)
                       .values(seq=AuditCheckpointRecord.seq + 1))  # fmt: skip
    assert node_a.cli("audit", "verify").returncode == 0


@pytest.mark.postgres
def test_reload_and_drain_of_another_node_through_the_database(
    pair: tuple[Gateway, Gateway],
) -> None:
    node_a, node_b = pair
    good = node_b.config_path.read_text()
    node_b.config_path.write_text(good + DENY_MORTAL.replace('["mortal"]', '["nowhere"]'))
    reload = node_a.cli("node", "reload", "node-b")
    assert reload.returncode == 1
    assert "node node-b kept its policy" in reload.stderr and "'nowhere'" in reload.stderr
    node_b.config_path.write_text(good + DENY_MORTAL)
    reload = node_a.cli("node", "reload", "node-b")
    assert reload.returncode == 0, reload.stderr
    assert "node node-b reloaded its policy" in reload.stdout
    assert "node-b" in node_records(node_a, "node.reloaded", "node-b")[0].target
    # node-a kept its own policy: the two now differ, and status says so.
    status = node_a.cli("status")
    assert status.returncode == 1 and "the nodes' targets and rules differ" in status.stdout

    live, _, live_err = live_ssh(node_b, "web01", "sleep 120")
    drain = node_a.cli("node", "drain", "node-b", "--deadline", "10m")
    assert drain.returncode == 0, drain.stderr
    assert "node node-b is draining: it refuses new sessions; its 1 live sessions" in drain.stdout
    live_err.wait_for(r"node node-b is draining")
    # Asking again moves the deadline (the node answers with another node.draining).
    drain = node_a.cli("node", "drain", "node-b", "--deadline", "6s")
    assert drain.returncode == 0, drain.stderr
    moved = node_records(node_a, "node.draining", "node-b")
    assert len(moved) == 2 and json.loads(moved[1].details)["moved"] is True
    refused = node_b.run_ssh(node_b.make_user(), "web01", "echo in")
    assert b"node node-b is draining" in refused.stderr and refused.returncode != 0
    assert node_b.process.wait(timeout=30) == 0
    live.wait(timeout=10)
    live_err.wait_for("node drained")
    # node-a goes on serving.
    allowed = node_a.run_ssh(node_a.make_user(), "web01", "echo in")
    assert allowed.returncode == 0 and allowed.stdout == b"in\n", allowed.stderr
    report = node_a.cli("status").stdout
    assert any(line.split()[:2] == ["node-b", "stopped"] for line in report.splitlines()), report
