"""Gateway nodes sharing one database: registration, heartbeats and takeover.

Every node writes its heartbeat to the ``nodes`` table every few seconds.
A node whose heartbeat is older than the timeout is taken for dead by the
first surviving node to notice: in one transaction it marks that node
``dead``, marks its live sessions ``interrupted`` (each audited) and records
``node.taken_over``. The node row is locked for this, so two survivors never
both take over the same node.

Times come from each node's clock: nodes need synchronised clocks (NTP); a
skew well under the timeout (15 s by default) is harmless.

Plain Python over the store; no sockets.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.domain.audit.trail import ActorType, AuditEvent, AuditLog, AuditRecord, Trail
from gateway.domain.node_identity import NodeIdentity
from gateway.domain.sessions import SessionLedger
from gateway.errors import PamgateError
from gateway.processes import process_exists
from gateway.store.database import Store
from gateway.store.models import GatewayNodeRecord, SessionRecord


class NodeNameInUse(PamgateError):
    """Another running node already uses this node name."""


class NodeKeysDiffer(PamgateError):
    """This node's keys are not the ones the running nodes use."""


@dataclass(frozen=True)
class NodeInfo:
    """A node as ``pamgate status`` shows it."""

    name: str
    host: str
    pid: int
    status: str
    started_at: datetime
    heartbeat_at: datetime
    live_sessions: int
    taken_over_by: str | None = None
    taken_over_at: datetime | None = None
    #: sha256 of its targets and rules, when it recorded one.
    policy_digest: str | None = None
    #: While it drains (``pamgate node drain``): when its last sessions are ended.
    drain_deadline: datetime | None = None

    def heartbeat_age(self, now: datetime) -> float:
        """Seconds since the last heartbeat."""
        return (now - self.heartbeat_at).total_seconds()


@dataclass(frozen=True)
class Takeover:
    """A dead node taken over, and the sessions it had live."""

    node: str
    last_heartbeat: datetime
    interrupted: list[str]


class NodeRegistry:
    """This node's row in ``nodes``, and the watch over the others."""

    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        ledger: SessionLedger,
        name: str,
        *,
        timeout_seconds: float = 15.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._audit = audit
        self._ledger = ledger
        self.name = name
        self._timeout = timedelta(seconds=timeout_seconds)
        self._clock = clock
        self._host = socket.gethostname()
        self._pid = os.getpid()

    def register(self, identity: NodeIdentity | None = None) -> None:
        """Record this node as up, with its ``identity`` (keys and policy digest).

        NodeNameInUse if a live node already has the name; NodeKeysDiffer if
        a running node's keys differ from this one's (nothing is recorded then).
        A policy digest that differs from a running node's is audited
        (``node.policy_drift``) but allowed: a rolling change passes through it.
        A row left ``up`` by a crashed process (same host, process gone) or a
        silent one (heartbeat older than the timeout) is taken over.
        """
        now = self._now()
        records = []
        with self._store.transaction() as db:
            row = db.get(GatewayNodeRecord, self.name, with_for_update=True)
            if row is not None and row.status == "up" and self._still_running(row, now):
                raise NodeNameInUse(
                    f"node name {self.name!r} is in use by a running node (pid {row.pid} on "
                    f"{row.host}, heartbeat {(now - row.heartbeat_at).total_seconds():.0f} s "
                    "ago): give each node its own [node] name"
                )
            if identity is not None:
                records = self._check_identity(db, identity, now)
            if row is None:
                row = GatewayNodeRecord(name=self.name)
                db.add(row)
            row.host, row.pid, row.status = self._host, self._pid, "up"
            row.started_at = row.heartbeat_at = now
            row.taken_over_by = row.taken_over_at = None
            # A request to the previous process with this name is not one to this process.
            row.reload_requested_at = row.drain_deadline = None
            if identity is not None:
                row.policy_digest = identity.policy_digest
                row.key_fingerprints = json.dumps(identity.keys, sort_keys=True)
        for record in records:
            self._audit.committed(record)

    def _check_identity(
        self, db: Session, identity: NodeIdentity, now: datetime
    ) -> list[AuditRecord]:
        """Refuse keys that differ from a running node's; audit a policy that does."""
        running = db.scalars(
            select(GatewayNodeRecord).where(
                GatewayNodeRecord.status == "up",
                GatewayNodeRecord.name != self.name,
                GatewayNodeRecord.heartbeat_at >= now - self._timeout,
                GatewayNodeRecord.key_fingerprints.is_not(None),
            ).order_by(GatewayNodeRecord.name)
        ).all()
        drift = []
        for other in running:
            theirs = NodeIdentity(json.loads(other.key_fingerprints or "{}"),
                                  other.policy_digest or "")  # fmt: skip
            differences = identity.key_differences(theirs)
            if differences:
                raise NodeKeysDiffer(
                    f"this node's keys differ from running node {other.name}'s ("
                    + "; ".join(differences)
                    + "): copy DATA_DIR/keys from a running node before starting this one"
                )
            if theirs.policy_digest and theirs.policy_digest != identity.policy_digest:
                drift.append(other.name)
        if not drift:
            return []
        return [self._audit.append(db, Trail.HUMAN, AuditEvent(
            actor=f"gateway:{self.name}", actor_type=ActorType.GATEWAY,
            action="node.policy_drift", outcome="failure", target=f"node:{self.name}",
            reason=f"this node's targets and rules differ from {', '.join(drift)}'s",
            authority=f"policy:sha256={identity.policy_digest[:16]}",
            details={"policy_sha256": identity.policy_digest, "differs_from": drift},
        ))]  # fmt: skip

    def heartbeat(self) -> bool:
        """Record that this node is alive. False if another node had taken it for dead.

        A node taken for dead (it was cut off or stalled) has had its live
        sessions marked interrupted and asked to end; it comes back as up.
        """
        with self._store.transaction() as db:
            row = db.get(GatewayNodeRecord, self.name, with_for_update=True)
            if row is None:
                row = GatewayNodeRecord(
                    name=self.name, host=self._host, pid=self._pid, started_at=self._now()
                )
                db.add(row)
            was_dead = row.status == "dead"
            row.status, row.heartbeat_at = "up", self._now()
            row.host, row.pid = self._host, self._pid
        return not was_dead

    def stopped(self) -> None:
        """Record a clean stop (not a death: nobody takes over a stopped node)."""
        with self._store.transaction() as db:
            row = db.get(GatewayNodeRecord, self.name, with_for_update=True)
            if row is not None and row.pid == self._pid:
                row.status, row.heartbeat_at = "stopped", self._now()

    def take_over_dead(self) -> list[Takeover]:
        """Take over every other node silent for longer than the timeout.

        For each, in one transaction: the node becomes ``dead``, its live
        sessions ``interrupted`` (audited in their lanes' trails), and
        ``node.taken_over`` goes to the human trail.
        """
        now = self._now()
        records: list[AuditRecord] = []
        takeovers = []
        with self._store.transaction() as db:
            silent = db.scalars(
                select(GatewayNodeRecord)
                .where(
                    GatewayNodeRecord.status == "up",
                    GatewayNodeRecord.name != self.name,
                    GatewayNodeRecord.heartbeat_at < now - self._timeout,
                )
                .order_by(GatewayNodeRecord.name)
                .with_for_update()
            ).all()
            timeout = self._timeout.total_seconds()
            for row in silent:
                silence = (now - row.heartbeat_at).total_seconds()
                reason = (
                    f"gateway node {row.name} stopped answering ({silence:.0f} s without a "
                    f"heartbeat); taken over by {self.name}"
                )
                interrupted = self._ledger.interrupt_in(db, row.name, reason=reason)
                row.status, row.taken_over_by, row.taken_over_at = "dead", self.name, now
                records.extend(interrupted)
                session_ids = [r.session_id for r in interrupted if r.session_id]
                records.append(self._audit.append(db, Trail.HUMAN, AuditEvent(
                    actor=f"gateway:{self.name}", actor_type=ActorType.GATEWAY,
                    action="node.taken_over", outcome="success", target=f"node:{row.name}",
                    reason=reason, authority=f"heartbeat-timeout:{timeout:g}s",
                    details={"host": row.host, "pid": row.pid, "sessions": session_ids,
                             "last_heartbeat": row.heartbeat_at.isoformat()},
                )))  # fmt: skip
                takeovers.append(Takeover(row.name, row.heartbeat_at, session_ids))
        for record in records:
            self._audit.committed(record)
        return takeovers

    def forget(self, name: str, *, actor: str, authority: str) -> NodeInfo:
        """Remove a retired node (stopped or dead) from the registry; audited.

        PamgateError if there is no such node, or it still runs (a recent
        heartbeat) or still has live sessions: forgetting must not hide one.
        """
        now = self._now()
        with self._store.transaction() as db:
            row = db.get(GatewayNodeRecord, name, with_for_update=True)
            if row is None:
                raise PamgateError(f"no node named {name!r} (pamgate status lists them)")
            live = db.scalar(
                select(func.count()).where(
                    SessionRecord.node == name, SessionRecord.status == "live"
                )
            )
            silence = (now - row.heartbeat_at).total_seconds()
            if row.status == "up" and silence <= self._timeout.total_seconds():
                raise PamgateError(
                    f"node {name} is up (heartbeat {silence:.0f} s ago): stop it first"
                )
            if live:
                raise PamgateError(
                    f"node {name} still has {live} live sessions: wait until another node "
                    "takes it over (they are then marked interrupted)"
                )
            info = _info(row, 0)
            db.delete(row)
            record = self._audit.append(db, Trail.HUMAN, AuditEvent(
                actor=actor, actor_type=ActorType.ADMIN, action="node.forgotten",
                outcome="success", target=f"node:{name}", authority=authority,
                details={"status": row.status, "host": row.host,
                         "last_heartbeat": row.heartbeat_at.isoformat()},
            ))  # fmt: skip
        self._audit.committed(record)
        return info

    def list(self) -> list[NodeInfo]:
        """Every node the database knows, with its count of live sessions, by name."""
        with self._store.transaction(write=False) as db:
            counts = dict(
                db.execute(
                    select(SessionRecord.node, func.count())
                    .where(SessionRecord.status == "live")
                    .group_by(SessionRecord.node)
                )
                .tuples()
                .all()
            )
            rows = db.scalars(select(GatewayNodeRecord).order_by(GatewayNodeRecord.name)).all()
            nodes = [_info(row, counts.pop(row.name, 0)) for row in rows]
        # Live sessions of a node with no row (it ran before nodes were recorded).
        for name, count in sorted(counts.items()):
            epoch = datetime.fromtimestamp(0, UTC)
            nodes.append(NodeInfo(name, "?", 0, "unknown", epoch, epoch, count))
        return nodes

    def _still_running(self, row: GatewayNodeRecord, now: datetime) -> bool:
        if now - row.heartbeat_at > self._timeout:
            return False
        if row.host == self._host:
            return row.pid != self._pid and process_exists(row.pid)
        return True

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)


def _info(row: GatewayNodeRecord, live_sessions: int) -> NodeInfo:
    return NodeInfo(
        name=row.name, host=row.host, pid=row.pid, status=row.status,
        started_at=row.started_at, heartbeat_at=row.heartbeat_at, live_sessions=live_sessions,
        taken_over_by=row.taken_over_by, taken_over_at=row.taken_over_at,
        policy_digest=row.policy_digest, drain_deadline=row.drain_deadline,
    )  # fmt: skip
