"""``pamgate serve`` with two relay worker processes, driven by stock ssh.

Each worker listens on both lanes' ports (SO_REUSEPORT); the parent runs the
node-wide duties and supervises them. These tests show that connections are
spread over both workers, that terminations and revocations reach a session
in either worker (they go through the database), that a worker that dies is
replaced and its session sealed as interrupted, and that neither ``kill -9``
nor SIGTERM of the parent leaves a process behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.config import load_config
from gateway.devtools.openssh_target import free_port
from gateway.domain.audit.trail import Trail
from gateway.services import GatewayServices
from gateway.store.database import Store
from gateway.store.models import SessionRecord
from tests.support.gateway import Gateway, TestUser, launch_gateway
from tests.support.nodes import sample, scrape

pytestmark = pytest.mark.openssh

WORKERS = 2


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    metrics_port = free_port()
    with launch_gateway(
        tmp_path, f"\n[metrics]\nport = {metrics_port}\n", workers=WORKERS, new_session=True
    ) as running:
        yield running


def group_processes(pgid: int) -> list[int]:
    """Pids of every process in process group ``pgid`` (read from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def wait_until(condition: object, timeout: float, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def sessions(gateway: Gateway) -> list[SessionRecord]:
    store = Store(load_config(gateway.config_path).database_url)
    try:
        with store.transaction(write=False) as db:
            rows = list(db.scalars(select(SessionRecord).order_by(SessionRecord.started_at)))
            db.expunge_all()
            return rows
    finally:
        store.dispose()


def worker_pids(gateway: Gateway) -> dict[int, int]:
    """Each worker's newest pid, from the parent's log lines."""
    found = re.findall(r"relay worker (\d+) listening \(pid (\d+)\)", gateway.log_text())
    return {int(index): int(pid) for index, pid in found}


def live_in_each_worker(gateway: Gateway, users: list[TestUser]) -> list[subprocess.Popen[bytes]]:
    """Start long sessions (one user each) until each worker relays at least one."""
    clients = []
    for user in users:
        clients.append(gateway.start_ssh(user, "web01", "echo started; sleep 60"))
        assert clients[-1].stdout is not None
        assert clients[-1].stdout.readline() == b"started\n"
        live = {row.worker for row in sessions(gateway) if row.status == "live"}
        if live == set(range(WORKERS)):
            return clients
    pytest.fail(f"{len(users)} sessions all landed in one worker (the kernel spreads them)")


def test_connections_are_spread_over_both_workers_and_all_succeed(gateway: Gateway) -> None:
    users = [gateway.make_user() for _ in range(16)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda user: gateway.run_ssh(user, "web01", "echo ok"), users))
    assert [result.stdout for result in results] == [b"ok\n"] * len(users), [
        result.stderr for result in results if result.returncode
    ]
    # A session's end is recorded as its channel closes, the client may be gone first.
    wait_until(
        lambda: {row.status for row in sessions(gateway)} == {"closed"}, 10, "every end recorded"
    )
    rows = sessions(gateway)
    assert len(rows) == len(users)
    by_worker = {worker: sum(row.worker == worker for row in rows) for worker in range(WORKERS)}
    print(f"sessions per worker: {by_worker}")
    assert set(by_worker) == {0, 1} and all(by_worker.values()), by_worker
    # Each session's audit start event names its worker too.
    starts = [record for record in gateway.audit.tail(Trail.HUMAN, 400)
              if record.action == "session.start"]  # fmt: skip
    assert {f'"worker":{row.worker}' in record.details.replace(" ", "") for row in rows
            for record in starts if record.session_id == row.id} == {True}  # fmt: skip


def test_termination_and_disable_end_sessions_in_either_worker(gateway: Gateway) -> None:
    clients = live_in_each_worker(gateway, [gateway.make_user() for _ in range(12)])
    live = [row for row in sessions(gateway) if row.status == "live"]
    # A console termination, for one session in each worker.
    by_worker = {row.worker: row for row in live}
    assert set(by_worker) == {0, 1}
    services = GatewayServices.open(load_config(gateway.config_path))
    try:
        for row in by_worker.values():
            services.ledger.request_termination(row.id, actor="tests", reason="ended by test")
        wait_until(
            lambda: all(
                row.status != "live" for row in sessions(gateway) if row.id in
                {r.id for r in by_worker.values()}
            ),
            10, "both terminated sessions to end",
        )  # fmt: skip
    finally:
        services.close()
    # Every other live session: its user disabled, whichever worker relays it.
    for row in live:
        if row.id not in {r.id for r in by_worker.values()}:
            assert gateway.cli("user", "disable", row.user).returncode == 0
    wait_until(
        lambda: all(row.status != "live" for row in sessions(gateway)), 10, "every session to end"
    )
    for client in clients:
        assert client.wait(timeout=10) != 0
    ended = {row.id: row for row in sessions(gateway)}
    for row in by_worker.values():
        assert "ended by test" in (ended[row.id].reason or ended[row.id].terminate_reason or "")


def test_a_killed_worker_is_replaced_and_its_session_sealed_interrupted(
    gateway: Gateway,
) -> None:
    user = gateway.make_user()
    client = gateway.start_ssh(user, "web01", "echo started; sleep 60")
    assert client.stdout is not None and client.stdout.readline() == b"started\n"
    (row,) = [row for row in sessions(gateway) if row.status == "live"]
    assert row.worker is not None
    victim = worker_pids(gateway)[row.worker]
    os.kill(victim, signal.SIGKILL)
    client.wait(timeout=10)  # its connection went with the worker
    wait_until(
        lambda: next(r for r in sessions(gateway) if r.id == row.id).recording_sha256, 10,
        "the session to be marked interrupted and its recording sealed",
    )  # fmt: skip
    ended = next(r for r in sessions(gateway) if r.id == row.id)
    assert ended.status == "interrupted"
    assert f"relay worker {row.worker}" in ended.reason
    wait_until(lambda: worker_pids(gateway).get(row.worker, victim) != victim, 15, "a replacement")
    log = gateway.log_text()
    assert re.search(rf"relay worker {row.worker} \(pid {victim}\) died \(killed by SIGKILL\)", log)
    (died,) = [r for r in gateway.audit.tail(Trail.HUMAN, 100) if r.action == "gateway.worker_died"]
    assert died.reason == "killed by SIGKILL" and died.outcome == "failure"
    assert json.loads(died.details or "{}")["sessions_interrupted"] == 1
    # The node serves on: every new connection succeeds, in both workers.
    users = [gateway.make_user() for _ in range(8)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda u: gateway.run_ssh(u, "web01", "echo ok"), users))
    assert [result.stdout for result in results] == [b"ok\n"] * len(users)
    assert gateway.cli("recordings", "verify", row.id).returncode == 0


def test_kill_9_of_the_parent_leaves_no_process_behind(gateway: Gateway) -> None:
    clients = live_in_each_worker(gateway, [gateway.make_user() for _ in range(12)])
    pgid = gateway.process.pid
    before = group_processes(pgid)
    assert len(before) >= 1 + WORKERS, before
    gateway.process.kill()
    gateway.process.wait(timeout=10)
    wait_until(lambda: not group_processes(pgid), 5, f"every process of group {pgid} to end")
    for client in clients:
        assert client.wait(timeout=10) != 0


def test_sigterm_stops_every_worker_and_their_sessions_are_told(gateway: Gateway) -> None:
    clients = live_in_each_worker(gateway, [gateway.make_user() for _ in range(12)])
    pgid = gateway.process.pid
    gateway.process.send_signal(signal.SIGTERM)
    assert gateway.process.wait(timeout=30) == 0
    for client in clients:
        _, stderr = client.communicate(timeout=10)
        assert b"the gateway is shutting down" in stderr
    wait_until(lambda: not group_processes(pgid), 5, "no process left")
    # As with one process: each session's end is recorded by its worker (interrupted by
    # the stop, its recording sealed), then the parent records the node's stop.
    rows = sessions(gateway)
    assert len(rows) == len(clients)
    assert {row.status for row in rows} == {"interrupted"}
    assert all(row.recording_sha256 for row in rows)
    actions = [record.action for record in gateway.audit.tail(Trail.HUMAN, 100)]
    assert actions.count("session.end") == len(clients) and actions[-1] == "gateway.stopped"
    verified = gateway.cli("audit", "verify")
    assert verified.returncode == 0, verified.stdout


def test_metrics_add_up_every_worker(gateway: Gateway) -> None:
    port = load_config(gateway.config_path).metrics.port
    assert port is not None
    users = [gateway.make_user() for _ in range(10)]
    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(lambda u: gateway.run_ssh(u, "web01", "echo ok"), users))
    assert [result.returncode for result in results] == [0] * len(users)
    wait_until(
        lambda: {row.status for row in sessions(gateway)} == {"closed"}, 10, "every end recorded"
    )
    clients = live_in_each_worker(gateway, [gateway.make_user() for _ in range(12)])
    status, text = scrape(port, "/metrics")
    assert status == 200
    assert sample(text, "pamgate_workers") == WORKERS
    live = [row for row in sessions(gateway) if row.status == "live"]
    for worker in range(WORKERS):
        assert sample(text, "pamgate_worker_sessions_live", worker=str(worker)) == sum(
            row.worker == worker for row in live
        )
    started = len(users) + len(clients)
    # Counted in both workers, added up by the parent's endpoint.
    assert sample(text, "pamgate_sessions_started_total", lane="human") == started
    assert sample(text, "pamgate_sessions_ended_total", lane="human", status="closed") == len(users)
    assert sample(text, "pamgate_logins_total", lane="human", outcome="success") == started
    status, body = scrape(port, "/healthz")
    assert status == 200, body
    for client in clients:
        client.kill()


def test_a_port_taken_stops_the_node_with_the_reason_and_no_worker_left(
    gateway: Gateway,
) -> None:
    gateway.process.send_signal(signal.SIGTERM)
    assert gateway.process.wait(timeout=30) == 0
    # Someone else holds the human lane's port, without SO_REUSEPORT.
    with socket.create_server(("127.0.0.1", gateway.port)):
        second = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "--config", str(gateway.config_path),
             "serve", "--workers", str(WORKERS)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, start_new_session=True,
        )  # fmt: skip
        _, stderr = second.communicate(timeout=90)
        assert second.returncode == 1, stderr
        assert f"cannot listen on 127.0.0.1:{gateway.port} for the human lane" in stderr
        # multiprocessing's resource tracker ends once the parent's descriptor closes.
        wait_until(lambda: not group_processes(second.pid), 5, "no process left")


def test_the_guessing_budget_is_the_nodes_not_each_workers(gateway: Gateway) -> None:
    """An attacker's connections land in both workers; the per-(user, address) budget
    (user_source_failures = 3 in the test config) still holds for the node as a whole."""
    user = gateway.make_user()
    guesses = 0
    while guesses < 3:
        assert gateway.run_ssh(user, "web01", "true", password="guess").returncode != 0
        guesses = sum(
            1 for record in gateway.audit.tail(Trail.HUMAN, 200)
            if record.action == "auth.failure" and record.actor == user.name
        )  # fmt: skip
    # Now even the right password and code are held back, in whichever worker.
    attempts = [gateway.run_ssh(user, "web01", "echo in") for _ in range(12)]
    assert all(attempt.stdout == b"" and attempt.returncode != 0 for attempt in attempts)
    held_by = {
        int(found.group(1))
        for found in re.finditer(
            rf'pamgate\.audit\[worker (\d)\]: \{{"event": "auth\.failure".*"actor": "{user.name}"'
            rf'.*"reason": "throttled \(pair\)',
            gateway.log_text(),
        )
    }
    assert held_by == {0, 1}, f"12 held-back attempts, refused by workers {held_by}"
