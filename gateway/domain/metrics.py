"""What a node tells Prometheus: counters from the audit stream, gauges read at scrape time.

Counters follow the audit records this process commits (an audit listener),
so they count exactly what the trail holds and need no hook in the lanes:
sign-ins by lane and outcome, sessions started and ended, bytes relayed,
audit events and how long each append took.
Gauges (live sessions by lane and node, pending requests, unreviewed
break-glass, queued alerts) are read from the database when Prometheus
scrapes, so every node reports the deployment's state, not only its own.

With relay worker processes (``[node] workers``), every process of the node
counts into files in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's
multiprocess mode, set by ``pamgate serve``) and the endpoint, in the parent,
adds them up: the counters are the node's, whichever worker committed the record.

The endpoint that serves them is :mod:`gateway.ssh.metrics_endpoint`.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter as Tally
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from gateway.domain.audit.trail import AuditLog, AuditRecord
from gateway.errors import PamgateError
from gateway.store.database import Store
from gateway.store.models import AccessRequest, BreakGlassCase, OutboxMessage, SessionRecord

logger = logging.getLogger("pamgate.metrics")

#: Audit actions that settle a sign-in attempt, and the outcome label each gives.
_SIGN_INS = {
    "auth.success": "success",
    "auth.failure": "failure",
    "auth.refused": "refused",
    "auth.accepted": "success",
}


class GatewayMetrics:
    """One node's metrics registry; feed it committed audit records.

    ``workers``: how many processes relay sessions now (the ``pamgate_workers``
    gauge); a relay worker's own instance, which only counts, leaves it out.
    """

    def __init__(
        self, store: Store, audit: AuditLog, node: str, *, workers: Callable[[], int] | None = None
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        #: The registry the endpoint serves: in multiprocess mode the counters' values
        #: come from every process's files, not from this process's objects.
        self._served = self.registry
        shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if shared:
            self._served = CollectorRegistry(auto_describe=True)
            MultiProcessCollector(self._served, path=shared)
        self._logins = Counter(
            "pamgate_logins", "Sign-in attempts settled, by lane and outcome",
            ["lane", "outcome"], registry=self.registry,
        )  # fmt: skip
        self._started = Counter(
            "pamgate_sessions_started", "Sessions started on this node, by lane",
            ["lane"], registry=self.registry,
        )  # fmt: skip
        self._ended = Counter(
            "pamgate_sessions_ended", "Sessions ended on this node, by lane and status",
            ["lane", "status"], registry=self.registry,
        )  # fmt: skip
        self._relayed = Counter(
            "pamgate_relay_bytes", "Bytes relayed by ended sessions, by lane and direction",
            ["lane", "direction"], registry=self.registry,
        )  # fmt: skip
        self._events = Counter(
            "pamgate_audit_events", "Audit events this node committed, by trail",
            ["trail"], registry=self.registry,
        )  # fmt: skip
        self._append_seconds = Histogram(
            "pamgate_audit_append_seconds",
            "How long an audit append took, from the call to its commit (group commit "
            "queueing included)",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self._audit = audit
        self._served.register(_DeploymentGauges(store, node, workers or (lambda: 1)))

    def on_audit_record(self, record: AuditRecord) -> None:
        """Count one committed record (an :meth:`AuditLog.add_listener` callback)."""
        lane = "machine" if record.trail == "machine" else "human"
        self._events.labels(record.trail).inc()
        seconds = self._audit.append_seconds()
        if seconds is not None:
            self._append_seconds.observe(seconds)
        outcome = _SIGN_INS.get(record.action)
        if outcome is not None:
            self._logins.labels(lane, outcome).inc()
        elif record.action == "session.start":
            self._started.labels(lane).inc()
        elif record.action == "session.end":
            details = json.loads(record.details or "{}")
            self._ended.labels(lane, str(details.get("status", "unknown"))).inc()
            for direction, key in (("to_target", "bytes_to_target"),
                                   ("from_target", "bytes_from_target")):  # fmt: skip
                self._relayed.labels(lane, direction).inc(int(details.get(key) or 0))

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self._served)


class _DeploymentGauges(Collector):
    """Gauges read from the database at each scrape."""

    def __init__(self, store: Store, node: str, workers: Callable[[], int]) -> None:
        self._store = store
        self._node = node
        self._workers = workers

    def collect(self) -> Iterator[GaugeMetricFamily]:
        live = GaugeMetricFamily(
            "pamgate_sessions_live", "Live sessions, by lane and node", labels=["lane", "node"]
        )
        pending = GaugeMetricFamily("pamgate_requests_pending", "Access requests waiting")
        breakglass = GaugeMetricFamily(
            "pamgate_breakglass_unreviewed", "Break-glass cases not reviewed yet"
        )
        alerts = GaugeMetricFamily("pamgate_alerts_queued", "Webhook alerts not delivered yet")
        workers = GaugeMetricFamily(
            "pamgate_workers", "Processes of this node relaying sessions ([node] workers)"
        )
        workers.add_metric([], self._workers())
        by_worker = GaugeMetricFamily(
            "pamgate_worker_sessions_live",
            "This node's live sessions, by relay worker process (with [node] workers > 1)",
            labels=["worker"],
        )
        try:
            with self._store.transaction(write=False) as db:
                by_lane_node = Tally(
                    {(lane, node): count for lane, node, count in db.execute(
                        select(SessionRecord.lane, SessionRecord.node, func.count())
                        .where(SessionRecord.status == "live")
                        .group_by(SessionRecord.lane, SessionRecord.node)
                    ).tuples()}
                )  # fmt: skip
                waiting = db.scalar(
                    select(func.count()).where(AccessRequest.status == "pending")
                )
                unreviewed = db.scalar(
                    select(func.count()).where(BreakGlassCase.reviewed_at.is_(None))
                )
                queued = db.scalar(select(func.count(OutboxMessage.id)))
                per_worker = {
                    int(worker or 0): count for worker, count in db.execute(
                        select(SessionRecord.worker, func.count())
                        .where(SessionRecord.node == self._node, SessionRecord.status == "live",
                               SessionRecord.worker.is_not(None))
                        .group_by(SessionRecord.worker)
                    ).tuples()
                }  # fmt: skip
        except PamgateError as exc:
            logger.warning("metrics: cannot read the database: %s", exc)
            yield workers
            return
        by_lane_node.setdefault(("human", self._node), 0)
        by_lane_node.setdefault(("machine", self._node), 0)
        for (lane, node), count in sorted(by_lane_node.items()):
            live.add_metric([lane, node], count)
        pending.add_metric([], waiting or 0)
        breakglass.add_metric([], unreviewed or 0)
        alerts.add_metric([], queued or 0)
        relaying = self._workers()
        if relaying > 1:
            for worker in sorted(set(range(relaying)) | set(per_worker)):
                by_worker.add_metric([str(worker)], per_worker.get(worker, 0))
        yield from (live, pending, breakglass, alerts, workers, by_worker)
