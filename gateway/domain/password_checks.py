"""Password checks on workers of their own, the most deserving first.

A password check is one argon2 verification: about half a second of CPU and
64 MiB here. Many connections answering ``Password:`` at once (a guessing
flood from many addresses) would otherwise queue a person's own check behind
all of theirs, and fill the thread pool the rest of the gateway (audit
writes, the session watch) shares. So checks run here, on a few workers
(half the CPUs: argon2 uses several threads per check), in order of:

1. sources that signed someone in recently (a person's usual address),
2. then sources with fewer recent failures,
3. then first come, first served.

A flood from addresses that have been failing waits behind everyone else;
the work of each check does not change (the same argon2 for everyone, known
user or not).
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

logger = logging.getLogger("pamgate.password_checks")

#: Sources remembered as having signed someone in.
MAX_REMEMBERED_SOURCES = 10_000


class PasswordChecks:
    """A priority queue of password checks and the worker threads that run them."""

    def __init__(self, workers: int | None = None) -> None:
        self._workers = workers or max(1, (os.cpu_count() or 2) // 2)
        self._queue: queue.PriorityQueue[tuple[tuple[float, ...], int, Callable[[], None]]] = (
            queue.PriorityQueue()
        )
        self._order = itertools.count()
        self._started = False
        self._lock = threading.Lock()
        self._good_sources: dict[str, float] = {}

    def signed_in_from(self, source: str, when: float) -> None:
        """``source`` signed someone in at ``when``: its checks go first from now on."""
        with self._lock:
            if len(self._good_sources) >= MAX_REMEMBERED_SOURCES:
                oldest = min(self._good_sources, key=self._good_sources.__getitem__)
                del self._good_sources[oldest]
            self._good_sources[source] = when

    def priority(self, source: str, source_failures: float, since: float) -> tuple[float, ...]:
        """The order key of a check from ``source``: known-good sources first, then by failures.

        ``since``: a success before this time no longer counts.
        """
        with self._lock:
            known = self._good_sources.get(source, -1.0) >= since
        return (0.0 if known else 1.0, source_failures)

    def submit(self, priority: tuple[float, ...], check: Callable[[], Any]) -> Future[Any]:
        """Run ``check`` on a worker when its turn comes; its result (or error) in the future."""
        future: Future[Any] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(check())
            except BaseException as exc:  # handed to whoever waits for it
                future.set_exception(exc)

        self._start()
        self._queue.put((priority, next(self._order), run))
        return future

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        for index in range(self._workers):
            threading.Thread(
                target=self._work, name=f"pamgate-password-check-{index}", daemon=True
            ).start()

    def _work(self) -> None:
        while True:
            _, _, run = self._queue.get()
            try:
                run()
            except Exception:  # run() hands errors to its future; this is a last resort
                logger.exception("a password check failed")
