"""Blocking work runs on a pool per kind: a flood of one kind does not hold up the others."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from gateway.domain.audit.trail import ActorType, AuditEvent, AuditLog, Trail
from gateway.domain.executors import Executors, WorkKind
from gateway.errors import PamgateError
from gateway.store.database import Store
from tests.support.console import console_services


def _thread_name() -> str:
    return threading.current_thread().name


async def test_each_kind_runs_on_its_own_threads() -> None:
    executors = Executors(database=2, extraction=1, files=1)
    try:
        assert (await executors.run_db(_thread_name)).startswith("pamgate-database")
        assert (await executors.run_extraction(_thread_name)).startswith("pamgate-extraction")
        assert (await executors.run_files(_thread_name)).startswith("pamgate-files")
    finally:
        executors.shutdown()


async def test_errors_and_keyword_arguments_reach_the_caller() -> None:
    executors = Executors()
    try:
        assert await executors.run_db(int, "ff", base=16) == 255
        with pytest.raises(ValueError, match="invalid literal"):
            await executors.run_db(int, "not a number")
    finally:
        executors.shutdown()


def test_a_pool_without_threads_is_refused() -> None:
    with pytest.raises(ValueError, match="extraction executor needs at least one thread"):
        Executors(extraction=0)


async def test_audit_writes_complete_while_extraction_is_saturated(store: Store) -> None:
    """Every extraction thread is blocked (and more work queued behind them), as when
    several large sessions end together: an audit write and a sign-in's database read
    still complete, on the database threads."""
    executors = Executors(database=2, extraction=2, files=1)
    release = threading.Event()
    started = threading.Semaphore(0)

    def long_extraction() -> str:
        started.release()
        release.wait(timeout=60)
        return _thread_name()

    audit = AuditLog(store)
    event = AuditEvent(actor="alice", actor_type=ActorType.HUMAN, action="auth.failure")
    try:
        extractions = [asyncio.ensure_future(executors.run_extraction(long_extraction))
                       for _ in range(6)]  # fmt: skip
        for _ in range(2):  # both extraction threads are busy
            assert await asyncio.to_thread(started.acquire, timeout=30)
        began = time.perf_counter()
        record = await executors.run_db(audit.record, Trail.HUMAN, event)
        writer = await executors.run_db(_thread_name)
        seconds = time.perf_counter() - began
        assert not any(task.done() for task in extractions)  # still saturated meanwhile
        assert record.seq == 1 and writer.startswith("pamgate-database")
        print(f"audit write with extraction saturated: {seconds * 1000:.1f} ms")
        release.set()
        names = await asyncio.gather(*extractions)
        assert all(name.startswith("pamgate-extraction") for name in names)
        assert audit.verify(Trail.HUMAN).ok
    finally:
        release.set()
        executors.shutdown()


def test_the_node_sizes_its_pools_from_config(tmp_path: Path) -> None:
    services = console_services(
        tmp_path, "\n[node]\ndatabase_threads = 3\nextraction_threads = 1\nfile_threads = 2\n"
    )
    try:
        sizes = {kind: services.executors.pool(kind)._max_workers for kind in WorkKind}
        assert sizes == {WorkKind.DATABASE: 3, WorkKind.EXTRACTION: 1, WorkKind.FILES: 2}
    finally:
        services.close()


def test_a_pool_size_of_zero_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(PamgateError, match="extraction_threads"):
        console_services(tmp_path, "\n[node]\nextraction_threads = 0\n")
