"""Relay workers without sockets: how many, which sessions a dead one leaves, exit reasons.

The processes themselves (SO_REUSEPORT, kill -9, SIGTERM) are tested with stock
ssh in tests/e2e/test_workers.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.domain.audit.trail import AuditLog, Trail
from gateway.domain.sessions import SessionLedger, SessionStart
from gateway.errors import ConfigError
from gateway.ssh.workers import exit_reason
from gateway.store.database import Store


def open_session(ledger: SessionLedger, user: str) -> str:
    session_id = ledger.new_session_id()
    ledger.open(session_id, SessionStart("human", user, "web01", "root", "10.0.0.1",
                                         "policy:admins", "shell"))  # fmt: skip
    return session_id


def test_workers_default_to_one_per_core_and_serve_overrides_them(tmp_path: Path) -> None:
    path = tmp_path / "pamgate.toml"
    path.write_text("[node]\n")
    node = load_config(path).node
    assert node.workers == 0 and node.worker_count() == (os.cpu_count() or 1)
    assert node.worker_count(3) == 3 and node.worker_count(1) == 1
    path.write_text("[node]\nworkers = 4\n")
    node = load_config(path).node
    assert node.worker_count() == 4 and node.worker_count(1) == 1
    assert node.worker_count(0) == (os.cpu_count() or 1)
    path.write_text("[node]\nworkers = -1\n")
    with pytest.raises(ConfigError, match="node.workers"):
        load_config(path)


def test_serve_refuses_a_worker_count_that_is_not_one(tmp_path: Path) -> None:
    for bad in ("two", "-1", "513"):
        result = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "--config", str(tmp_path / "none.toml"),
             "serve", "--workers", bad],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert "--workers" in result.stderr


def test_a_dead_workers_sessions_and_only_its_are_interrupted(store: Store) -> None:
    audit = AuditLog(store)
    worker_0 = SessionLedger(store, audit, "node-a", worker=0)
    worker_1 = SessionLedger(store, audit, "node-a", worker=1)
    other_node = SessionLedger(store, audit, "node-b", worker=1)
    on_0 = open_session(worker_0, "alice")
    on_1 = open_session(worker_1, "bob")
    elsewhere = open_session(other_node, "carol")
    assert worker_0.mark_interrupted(worker=1) == [on_1]
    assert worker_0.get(on_0).status == "live"
    assert worker_0.get(elsewhere).status == "live"
    interrupted = [r for r in audit.tail(Trail.HUMAN, 10) if r.action == "session.interrupted"]
    assert [r.session_id for r in interrupted] == [on_1]
    assert "relay worker 1" in interrupted[0].reason
    starts = {r.session_id: r.details for r in audit.tail(Trail.HUMAN, 10)
              if r.action == "session.start"}  # fmt: skip
    assert '"worker":0' in (starts[on_0] or "").replace(" ", "")
    # The node's own restart still marks every one of its sessions.
    assert worker_1.mark_interrupted() == [on_0]


def test_exit_reasons_name_the_signal() -> None:
    assert exit_reason(-signal.SIGKILL) == "killed by SIGKILL"
    assert exit_reason(1) == "exit status 1"
    assert exit_reason(None) == "still running"
