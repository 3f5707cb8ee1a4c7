"""Command extraction in its worker process: errors come back, a dead worker is replaced.

The extraction itself, end to end through the gateway, is covered in
test_recordings.py (commands of a recorded shell session are searchable).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.datadir import initialize
from gateway.devtools.openssh_target import OpenSSHTarget
from gateway.domain.recordings.indexing import CommandIndexer
from gateway.domain.recordings.service import UnknownSession
from gateway.errors import PamgateError
from tests.support.gateway import gateway_config_text


def test_worker_errors_come_back_and_a_dead_worker_is_replaced(tmp_path: Path) -> None:
    config_path = tmp_path / "pamgate.toml"
    host_key = OpenSSHTarget(tmp_path / "web01", 22, tmp_path / "ca.pub").host_key_line()
    config_path.write_text(gateway_config_text(2222, 2223, {"web01": (22, host_key)}))
    config = load_config(config_path)
    initialize(config)
    indexer = CommandIndexer(config)
    try:
        with pytest.raises(UnknownSession, match="no session 'abc123'"):
            indexer.index("abc123")  # raised in the worker, seen here
        worker_pids = [pid for pid in _children(os.getpid()) if _is_worker(pid)]
        assert worker_pids, "no worker process was started"
        for pid in worker_pids:
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(PamgateError, match="worker died"):
            indexer.index("abc123")
        with pytest.raises(UnknownSession):
            indexer.index("abc123")  # a fresh worker answers
    finally:
        indexer.close()


def _children(pid: int) -> list[int]:
    return [
        int(child) for task in Path(f"/proc/{pid}/task").glob("*/children")
        for child in task.read_text().split()
    ]  # fmt: skip


def _is_worker(pid: int) -> bool:
    """A pool worker, not multiprocessing's resource tracker."""
    command = Path(f"/proc/{pid}/cmdline").read_bytes()
    return b"spawn_main" in command and b"resource_tracker" not in command
