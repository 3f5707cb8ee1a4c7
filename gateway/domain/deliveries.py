"""The running node's delivery workers: side effects of the audit, off everyone's path.

Two daemon threads, one per channel so a slow webhook never delays the SIEM's
copy: one posts queued webhook alerts (:class:`~gateway.domain.alerts.WebhookDelivery`),
one copies new audit records to syslog
(:class:`~gateway.domain.audit.syslog.SyslogForwarder`). Each runs a round when
woken (an alert queued or a record committed in this process) or every
``interval`` seconds (work queued by other processes: the CLI, other nodes),
and stops after its current round.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger("pamgate.deliveries")

#: Seconds between rounds when nobody wakes a worker.
POLL_SECONDS = 1.0


class DeliveryWorker:
    """Runs ``deliver_round`` in its own thread, when woken or every ``interval`` seconds."""

    def __init__(
        self, name: str, deliver_round: Callable[[], int], *, interval: float = POLL_SECONDS
    ) -> None:
        self.name = name
        self._deliver_round = deliver_round
        self._interval = interval
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """Run a round now (cheap; safe from any thread)."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Run a last round for what is due, then stop; waits up to ``timeout`` seconds."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            try:
                # Rounds that did work go again at once: a backlog drains at full speed.
                while self._deliver_round() and not self._stopping.is_set():
                    pass
            except Exception:  # a bug here must not end deliveries for good
                logger.exception("%s: delivery round failed", self.name)
            if self._stopping.is_set():
                return
