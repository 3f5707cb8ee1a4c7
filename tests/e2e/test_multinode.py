"""Several gateway nodes on one PostgreSQL database, with stock ssh clients.

Three ``pamgate serve`` processes (node-a, node-b, node-c) share one fresh
PostgreSQL database and one data directory (keys, recordings), as nodes
behind a TCP load balancer would. Approvals, revocations and takeovers cross
from one node to another; the audit chain stays single and unbroken.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pyotp
import pytest

from gateway.config import load_config
from gateway.domain.audit.trail import Trail
from gateway.domain.wakeups import CHANNEL_SAFETY_POLL_SECONDS
from gateway.services import GatewayServices
from tests.support.console import add_person, rows, sign_in, wait_for
from tests.support.database import fresh_database, postgres_server_url
from tests.support.gateway import Gateway, TestUser, decide, launch_gateway
from tests.support.nodes import add_node
from tui.app import PamgateConsole
from tui.screens.sessions import SessionsScreen

pytestmark = [pytest.mark.openssh, pytest.mark.postgres]

HEARTBEAT_TIMEOUT = 3.0
NODE_CONFIG = f"""
[node]
name = "node-a"
heartbeat_interval_seconds = 0.5
heartbeat_timeout_seconds = {HEARTBEAT_TIMEOUT}
"""


@dataclass
class Cluster:
    """Three nodes on one database; ``services`` is a domain view of it (any node's config)."""

    a: Gateway
    b: Gateway
    c: Gateway
    services: GatewayServices

    @property
    def nodes(self) -> tuple[Gateway, ...]:
        return (self.a, self.b, self.c)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    with (
        fresh_database(postgres_server_url()) as url,
        launch_gateway(root, NODE_CONFIG, url) as node_a,
    ):
        node_b = add_node(node_a, "node-b", first_name="node-a")
        node_c = add_node(node_a, "node-c", first_name="node-a")
        services = GatewayServices.open(load_config(node_b.config_path))
        try:
            yield Cluster(node_a, node_b, node_c, services)
        finally:
            services.close()
            for node in (node_b, node_c):
                if node.process.poll() is None:
                    node.process.send_signal(signal.SIGTERM)
                    node.process.wait(timeout=10)


class StderrLines:
    """Reads a process's stderr in a thread, noting when each line arrived."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.lines: list[tuple[float, str]] = []
        self._changed = threading.Condition()
        assert process.stderr is not None
        self._stream = process.stderr
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in self._stream:
            with self._changed:
                self.lines.append((time.monotonic(), raw.decode(errors="replace")))
                self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = 20) -> tuple[float, re.Match[str]]:
        """When the first line matching ``pattern`` arrived, and the match."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for at, line in self.lines:
                    found = re.search(pattern, line)
                    if found:
                        return at, found
                left = deadline - time.monotonic()
                assert left > 0, f"no {pattern!r} in {[line for _, line in self.lines]}"
                self._changed.wait(left)


def wait_live(cluster: Cluster, user: str, node: str, timeout: float = 20) -> str:
    """The id of ``user``'s live session on ``node``, once there is one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for session in cluster.services.ledger.live():
            if session.user == user and session.node == node:
                return session.id
        time.sleep(0.1)
    raise AssertionError(f"no live session of {user} on {node}")


@dataclass
class ApprovedSession:
    """An ssh that waited for approval and was approved from another node."""

    process: subprocess.Popen[bytes]
    user: TestUser
    grant_id: int
    #: Seconds from the approval's commit to the waiting session being told.
    wake_latency: float


def approved_session(cluster: Cluster, node: Gateway, command: str) -> ApprovedSession:
    """A requester's ssh through ``node`` waits for approval; it is approved from node-b."""
    requester = node.make_user(groups=("requesters",))
    approver = node.make_user(groups=("leads",))
    process = node.start_ssh(requester, "web01", command)
    stderr = StderrLines(process)
    _, waiting = stderr.wait_for(r"Request #(\d+) for web01 \(root\) is waiting")
    request_id = int(waiting.group(1))
    time.sleep(0.3)  # the session is now polling; the approval lands between polls
    view = cluster.services.requests.approve(request_id, approver.name, "go ahead")
    approved_at = time.monotonic()
    told_at, _ = stderr.wait_for(rf"request #{request_id} approved by {approver.name}")
    assert view.grant_id is not None
    return ApprovedSession(process, requester, view.grant_id, told_at - approved_at)


def test_approval_on_another_node_wakes_the_waiting_session_within_a_second(
    cluster: Cluster,
) -> None:
    approved = approved_session(cluster, cluster.a, "echo ran-on-node-a")
    stdout, _ = approved.process.communicate(timeout=20)
    assert stdout == b"ran-on-node-a\n" and approved.process.returncode == 0
    print(f"approval on node-b reached node-a's session in {approved.wake_latency * 1000:.0f} ms")
    assert approved.wake_latency < 1.0
    starts = [r for r in cluster.services.audit.events(Trail.HUMAN)
              if r.action == "session.start" and r.actor == approved.user.name]  # fmt: skip
    assert len(starts) == 1 and '"node":"node-a"' in starts[0].details


def test_a_decision_by_the_cli_wakes_the_waiting_session_by_notify(cluster: Cluster) -> None:
    """The CLI is another process: its decision reaches the waiting session by
    LISTEN/NOTIFY, well before the safety poll would have (every 10 s on PostgreSQL)."""
    node = cluster.a
    requester = node.make_user(groups=("requesters",))
    approver = node.make_user(groups=("leads",))
    process = node.start_ssh(requester, "web01", "echo woken-by-notify")
    stderr = StderrLines(process)
    _, waiting = stderr.wait_for(r"Request #(\d+) for web01 \(root\) is waiting")
    request_id = int(waiting.group(1))
    time.sleep(0.5)  # the session's first read of its request is done: it sleeps now
    approved = decide(node, "approve", request_id, approver)
    assert approved.returncode == 0, approved.stderr
    told_at, _ = stderr.wait_for(rf"request #{request_id} approved by {approver.name}")
    told_wall = time.time() - (time.monotonic() - told_at)
    stdout, _ = process.communicate(timeout=20)
    assert stdout == b"woken-by-notify\n" and process.returncode == 0
    committed = next(
        r for r in cluster.services.audit.events(Trail.HUMAN)
        if r.action == "grant.created" and f'"request":{request_id}' in r.details
    )  # fmt: skip
    committed_wall = (
        datetime.strptime(committed.ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    )
    latency = told_wall - committed_wall
    print(f"CLI approval to the waiting session told: {latency * 1000:.0f} ms")
    assert latency < CHANNEL_SAFETY_POLL_SECONDS / 2  # woken, not found by the safety poll


def test_revoking_a_grant_on_one_node_ends_its_sessions_on_every_node(cluster: Cluster) -> None:
    approved = approved_session(cluster, cluster.a, "echo started; sleep 60")
    user = approved.user
    wait_live(cluster, user.name, "node-a")
    # The same user, under the same grant, through node-c. A TOTP code is
    # accepted once, so this login uses the next step's.
    next_code = pyotp.TOTP(user.totp_secret).at(time.time() + 30)
    second = subprocess.Popen(
        cluster.c.ssh_command(f"{user.name}:web01") + ["echo started; sleep 60"],
        env=cluster.c.ssh_env(user, code=next_code),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    wait_live(cluster, user.name, "node-c")
    cluster.services.requests.revoke(approved.grant_id, "auditor", "suspicious activity")
    revoked_at = time.monotonic()
    ended = []
    for process in (approved.process, second):
        process.wait(timeout=10)
        ended.append(time.monotonic() - revoked_at)
    print(f"sessions on node-a and node-c ended {ended[0]:.2f} s and {ended[1]:.2f} s after")
    assert max(ended) < 2.0
    # The ledger records the end just after the connection closes.
    deadline = time.monotonic() + 5
    while [s for s in cluster.services.ledger.live() if s.user == user.name]:
        assert time.monotonic() < deadline, "the revoked sessions are still recorded as live"
        time.sleep(0.1)
    assert b"was revoked" in second.stderr.read()  # type: ignore[union-attr]


async def test_the_console_on_one_node_lists_every_nodes_sessions_with_node_names(
    cluster: Cluster,
) -> None:
    users = [node.make_user() for node in (cluster.a, cluster.b)]
    processes = [
        node.start_ssh(user, "web01", "sleep 30")
        for node, user in zip((cluster.a, cluster.b), users, strict=True)
    ]
    try:
        for user, name in zip(users, ("node-a", "node-b"), strict=True):
            await asyncio.to_thread(wait_live, cluster, user.name, name)
        auditor = add_person(cluster.services, "auditor-x", "auditors")
        app = PamgateConsole(cluster.services)
        async with app.run_test(size=(120, 24)) as pilot:
            await sign_in(pilot, auditor)
            await pilot.press("2")
            await wait_for(pilot, lambda: isinstance(app.screen, SessionsScreen)
                           and len(rows(app, "#live")) >= 2)  # fmt: skip
            listed = {(row[1], row[3]) for row in rows(app, "#live")}
    finally:
        for process in processes:
            process.kill()
    assert {(users[0].name, "node-a"), (users[1].name, "node-b")} <= listed


def test_a_dead_node_has_its_sessions_interrupted_by_a_survivor(cluster: Cluster) -> None:
    user = cluster.c.make_user()
    process = cluster.c.start_ssh(user, "web01", "echo started; sleep 60")
    session_id = wait_live(cluster, user.name, "node-c")
    cluster.c.process.send_signal(signal.SIGKILL)
    cluster.c.process.wait(timeout=10)
    killed_at = time.monotonic()
    while time.monotonic() - killed_at < HEARTBEAT_TIMEOUT + 5:
        if cluster.services.ledger.get(session_id).status != "live":
            break
        time.sleep(0.1)
    taken_after = time.monotonic() - killed_at
    record = cluster.services.ledger.get(session_id)
    assert record.status == "interrupted", record
    print(f"node-c's session was marked interrupted {taken_after:.1f} s after SIGKILL")
    nodes = {node.name: node for node in cluster.services.nodes.list()}
    assert nodes["node-c"].status == "dead"
    survivor = nodes["node-c"].taken_over_by
    assert survivor in ("node-a", "node-b")
    events = list(cluster.services.audit.events(Trail.HUMAN))
    interrupted = [e for e in events if e.action == "session.interrupted"
                   and e.session_id == session_id]  # fmt: skip
    assert len(interrupted) == 1 and interrupted[0].actor == f"gateway:{survivor}"
    assert "node-c stopped answering" in interrupted[0].reason
    taken = [e for e in events if e.action == "node.taken_over" and e.target == "node:node-c"]
    assert len(taken) == 1 and session_id in taken[0].details
    assert cluster.services.audit.verify(Trail.HUMAN).ok
    # The survivor seals what the dead node's recording holds, so verification passes.
    deadline = time.monotonic() + 15
    while cluster.services.recordings.info(session_id).sha256 is None:
        assert time.monotonic() < deadline, "the interrupted recording was never sealed"
        time.sleep(0.2)
    sealed = [e for e in cluster.services.audit.events(Trail.HUMAN)
              if e.action == "recording.sealed" and e.session_id == session_id]  # fmt: skip
    assert len(sealed) == 1 and sealed[0].actor == f"gateway:{survivor}"
    assert cluster.services.recordings.verify(session_id)[1] is None
    process.kill()
    status = cluster.a.cli("status")
    assert status.returncode == 1, status.stdout  # a dead node is a fault until retired
    assert re.search(r"node-c\s+dead \(taken over by node-[ab]\)", status.stdout), status.stdout
    assert re.search(r"node-a\s+up\s+heartbeat\s+\d+\.\d s ago", status.stdout), status.stdout
    assert "schema: revision" in status.stdout and "up to date" in status.stdout
    assert "unhealthy: node node-c is dead" in status.stdout
    forgotten = cluster.a.cli("node", "forget", "node-c")
    assert forgotten.returncode == 0, forgotten.stderr
    assert forgotten.stdout.startswith("forgot node node-c (dead, last heartbeat ")
    status = cluster.a.cli("status")
    assert status.returncode == 0, status.stdout
    assert "node-c" not in status.stdout


def test_audit_appends_from_two_nodes_and_two_writers_form_one_chain(cluster: Cluster) -> None:
    script = (
        "import sys\n"
        "from gateway.store.database import Store\n"
        "from gateway.domain.audit.trail import AuditLog, AuditEvent, ActorType, Trail\n"
        "log = AuditLog(Store(sys.argv[1]))\n"
        "for i in range(150):\n"
        "    trail = Trail.HUMAN if i % 3 else Trail.MACHINE\n"
        "    log.record(trail, AuditEvent(actor=sys.argv[2], actor_type=ActorType.HUMAN,"
        " action='auth.failure', outcome='failure'))\n"
    )
    url = cluster.services.store.url
    before = {trail: cluster.services.audit.verify(trail).count for trail in Trail}
    writers = [
        subprocess.Popen([sys.executable, "-c", script, url, f"writer{i}"]) for i in range(2)
    ]
    # Meanwhile both remaining nodes append too (sign-ins on node-a and node-b).
    for node in (cluster.a, cluster.b):
        user = node.make_user()
        assert node.run_ssh(user, "web01", "true").returncode == 0
    assert all(writer.wait(timeout=120) == 0 for writer in writers)
    for trail in Trail:
        result = cluster.services.audit.verify(trail)
        assert result.ok, result
    assert cluster.services.audit.verify(Trail.MACHINE).count - before[Trail.MACHINE] == 100
    assert cluster.services.audit.verify(Trail.HUMAN).count - before[Trail.HUMAN] >= 200
