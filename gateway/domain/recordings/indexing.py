"""Command extraction in a worker process, away from the relay's interpreter.

Extracting a shell session's commands runs a terminal emulator over its whole
recording: several seconds of pure-Python CPU per hundred MB of output. In a
thread of the gateway it holds the GIL the relay needs, and every live
session slows down while it runs (bench.extraction_bench measures it). So it
runs in one long-lived worker process with its own connection to the store.
The worker writes the commands itself, exactly as
:meth:`RecordingService.index_commands` does in-process.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from gateway.config import GatewayConfig
from gateway.domain.audit.trail import AuditLog
from gateway.domain.recordings.service import RecordingService
from gateway.errors import PamgateError
from gateway.processes import die_with_parent
from gateway.store.database import Store

logger = logging.getLogger("pamgate.commands")

#: The worker's own recording service (set in the worker process only).
_worker_recordings: RecordingService | None = None


def _open_worker(config: GatewayConfig, parent_pid: int) -> None:
    global _worker_recordings
    # Without it a ``kill -9`` of ``pamgate serve`` would leave this worker (and, through
    # the descriptor it holds, multiprocessing's resource tracker) running for ever.
    die_with_parent(parent_pid)
    store = Store(config.database_url)
    _worker_recordings = RecordingService(config, store, AuditLog(store))


def _index_in_worker(session_id: str, live: bool) -> int:
    assert _worker_recordings is not None, "worker not initialised"
    return _worker_recordings.index_commands(session_id, live=live)


class CommandIndexer:
    """Indexes sessions' commands in a worker process; thread-safe, blocking calls."""

    def __init__(self, config: GatewayConfig) -> None:
        self._config = config
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def index(self, session_id: str, *, live: bool = False) -> int:
        """Extract and store ``session_id``'s commands; returns how many.

        ``live``: the session is running; store the commands finished so far
        (the worker carries each live session's extractor from pass to pass).

        Raises PamgateError if the worker failed (it is restarted for the next
        session), or what :meth:`RecordingService.index_commands` raises.
        """
        pool = self._worker()
        try:
            return pool.submit(_index_in_worker, session_id, live).result()
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            raise PamgateError("the command extraction worker died; it restarts") from None

    def close(self) -> None:
        """Stop the worker after the extractions already asked for."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def _worker(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # spawn: a fork would copy the gateway's sockets, threads and locks.
                self._pool = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_open_worker,
                    initargs=(self._config, os.getpid()),
                )
            return self._pool


_indexers: dict[tuple[str, str], CommandIndexer] = {}
_indexers_lock = threading.Lock()


def command_indexer(config: GatewayConfig) -> CommandIndexer:
    """The indexer for this gateway's store and recordings (one worker per gateway)."""
    key = (config.database_url, str(config.recordings_dir))
    with _indexers_lock:
        if key not in _indexers:
            _indexers[key] = CommandIndexer(config)
        return _indexers[key]
