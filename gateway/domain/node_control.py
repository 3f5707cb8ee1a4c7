"""Rolling changes to running nodes: policy reload and drain, asked for through the database.

``pamgate node reload [NAME]`` and ``pamgate node drain NAME`` write a request
into the node's row in ``nodes`` (audited); the node's control loop reads its
row every few seconds and acts on it, so they work for a node on any host
that shares the database. ``SIGHUP`` to a local ``pamgate serve`` reloads at
once.

A reload re-reads the config file and adopts what is safe to change under
live sessions: the targets, target groups and rules (:data:`RELOADABLE`).
Everything else (listeners, database URL, data directory and keys, ...) is
read at start only; a reload that finds those changed says which need a
restart. An invalid file changes nothing: the failure is audited with the
parser's message. A reload that cannot be audited does not happen.

Plain Python over the store; no sockets.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.config import GatewayConfig, load_config
from gateway.domain.audit.trail import ActorType, AuditEvent, AuditLog, AuditRecord, Trail
from gateway.domain.node_identity import policy_digest
from gateway.errors import PamgateError
from gateway.store.database import Store
from gateway.store.models import GatewayNodeRecord

#: The config entries a reload adopts; every other one needs a restart.
RELOADABLE = ("targets", "target_groups", "rules")
#: Why the sessions still live at a drain's deadline were ended (the audit reason).
DRAINED_REASON = "node drained"
#: The records with which a node answers a reload request.
RELOAD_ANSWERS = ("node.reloaded", "node.reload_failed")
#: The record with which a node answers a drain request (a new one when the deadline moves).
DRAIN_ANSWERS = ("node.draining",)


@dataclass(frozen=True)
class NodeRequests:
    """What operators asked of this node, as its row says."""

    #: ``pamgate node reload`` asked for a reload not yet done.
    reload: bool = False
    #: Set while a drain is asked for: when the sessions still live are ended.
    drain_deadline: datetime | None = None


@dataclass(frozen=True)
class PolicyReload:
    """A config file read for a reload, not yet adopted."""

    new: GatewayConfig
    old_digest: str
    new_digest: str
    #: Top-level config entries that changed but are read at start only.
    restart_needed: tuple[str, ...]


def read_for_reload(running: GatewayConfig) -> PolicyReload:
    """Read ``running``'s config file again and compare it with ``running``.

    Raises ConfigError (naming the file, the key and the problem) if the file
    is invalid; nothing is changed either way (see :func:`adopt_policy`).
    """
    new = load_config(running.source)
    restart = tuple(
        name for name in GatewayConfig.model_fields
        if name not in RELOADABLE and name != "source"
        and getattr(new, name) != getattr(running, name)
    )  # fmt: skip
    return PolicyReload(new, policy_digest(running), policy_digest(new), restart)


def adopt_policy(running: GatewayConfig, reload: PolicyReload) -> None:
    """Make ``running`` apply the targets, target groups and rules of ``reload``.

    In place, although the config is frozen for everyone else: every service
    of the node (the access decision, the policy, session setup, the lanes'
    live checks) holds this one object, so swapping its policy entries is seen
    by every path at once, where a new object would have to be wired into each.
    The three entries change in one assignment of the model's ``__dict__``:
    the config never holds rules of one file with targets of the other (a
    decision in another thread that reads it twice across the swap may still
    see one of each, and is checked again by the lane's watch a second later).
    """
    adopted = {name: getattr(reload.new, name) for name in RELOADABLE}
    object.__setattr__(running, "__dict__", {**running.__dict__, **adopted})


class NodeControl:
    """Reload and drain requests to the nodes, and this node's answers to them (audited)."""

    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        name: str,
        *,
        timeout_seconds: float = 15.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._audit = audit
        self.name = name
        self._timeout = timedelta(seconds=timeout_seconds)
        self._clock = clock

    # -- asked by operators ------------------------------------------------------------

    def request_reload(self, node: str, *, actor: str, authority: str) -> int:
        """Ask the running node ``node`` to reload its policy within a few seconds; audited
        (``node.reload_requested``). The request's place in the human trail (see
        :meth:`answer`); PamgateError if no such node runs."""
        now = self._now()
        with self._store.transaction() as db:
            row = self._running(db.get(GatewayNodeRecord, node, with_for_update=True), node, now)
            row.reload_requested_at = now
            record = self._audit.append(db, Trail.HUMAN, AuditEvent(
                actor=actor, actor_type=ActorType.ADMIN, action="node.reload_requested",
                outcome="success", target=f"node:{node}", authority=authority,
                details={"host": row.host, "pid": row.pid},
            ))  # fmt: skip
        self._audit.committed(record)
        return record.seq

    def answer(self, node: str, answers: tuple[str, ...], *, after_seq: int) -> AuditRecord | None:
        """``node``'s answer to a request made at ``after_seq`` in the human trail: its first
        record among ``answers`` (:data:`RELOAD_ANSWERS`, :data:`DRAIN_ANSWERS`) since, or
        None while it has none (a node of a release before 0011 never answers)."""
        for record in self._audit.events(Trail.HUMAN, after_seq=after_seq):
            if record.action in answers and record.target == f"node:{node}":
                return record
        return None

    def request_drain(
        self, node: str, deadline_seconds: float, *, actor: str, authority: str
    ) -> tuple[datetime, int]:
        """Ask the running node ``node`` to drain: refuse new sessions, warn the live ones,
        end those left after ``deadline_seconds`` and stop. Audited (``node.drain_requested``).
        Asking again moves the deadline. The deadline and the request's place in the human
        trail (see :meth:`answer`); PamgateError if no such node runs."""
        if deadline_seconds < 0:
            raise PamgateError("the drain deadline cannot be negative")
        now = self._now()
        deadline = now + timedelta(seconds=deadline_seconds)
        with self._store.transaction() as db:
            row = self._running(db.get(GatewayNodeRecord, node, with_for_update=True), node, now)
            row.drain_deadline = deadline
            record = self._audit.append(db, Trail.HUMAN, AuditEvent(
                actor=actor, actor_type=ActorType.ADMIN, action="node.drain_requested",
                outcome="success", target=f"node:{node}", authority=authority,
                details={"deadline": deadline.isoformat(), "host": row.host, "pid": row.pid},
            ))  # fmt: skip
        self._audit.committed(record)
        return deadline, record.seq

    def _running(
        self, row: GatewayNodeRecord | None, node: str, now: datetime
    ) -> GatewayNodeRecord:
        if row is None:
            raise PamgateError(f"no node named {node!r} (pamgate status lists them)")
        silence = (now - row.heartbeat_at).total_seconds()
        if row.status != "up" or silence > self._timeout.total_seconds():
            raise PamgateError(
                f"node {node} is not running ({row.status}, heartbeat {silence:.0f} s ago)"
            )
        return row

    # -- answered by this node ---------------------------------------------------------

    def requests(self) -> NodeRequests:
        """What is asked of this node now."""
        with self._store.transaction(write=False) as db:
            row = db.get(GatewayNodeRecord, self.name)
            if row is None:
                return NodeRequests()
            return NodeRequests(row.reload_requested_at is not None, row.drain_deadline)

    def record_reload(self, reload: PolicyReload, *, trigger: str) -> None:
        """Audit a reload about to be adopted (``node.reloaded``, old and new digest), record
        the new policy digest in the registry and clear the request. Raises if the audit
        write fails: the reload must not happen then."""
        with self._store.transaction() as db:
            row = db.get(GatewayNodeRecord, self.name, with_for_update=True)
            if row is not None:
                row.policy_digest = reload.new_digest
                row.reload_requested_at = None
            record = self._audit.append(db, Trail.HUMAN, AuditEvent(
                actor=f"gateway:{self.name}", actor_type=ActorType.GATEWAY,
                action="node.reloaded", outcome="success", target=f"node:{self.name}",
                authority=f"policy:sha256={reload.new_digest[:16]}",
                details={"old_policy_sha256": reload.old_digest,
                         "new_policy_sha256": reload.new_digest, "trigger": trigger,
                         "targets": len(reload.new.targets), "rules": len(reload.new.rules),
                         "restart_needed": list(reload.restart_needed)},
            ))  # fmt: skip
        self._audit.committed(record)

    def record_reload_failure(self, reason: str, *, digest: str, trigger: str) -> None:
        """Audit a reload refused (``node.reload_failed`` with ``reason``; the policy of
        ``digest`` stays) and clear the request, so it is not retried."""
        with self._store.transaction() as db:
            row = db.get(GatewayNodeRecord, self.name, with_for_update=True)
            if row is not None:
                row.reload_requested_at = None
            record = self._audit.append(db, Trail.HUMAN, AuditEvent(
                actor=f"gateway:{self.name}", actor_type=ActorType.GATEWAY,
                action="node.reload_failed", outcome="failure", target=f"node:{self.name}",
                reason=reason, authority=f"policy:sha256={digest[:16]}",
                details={"kept_policy_sha256": digest, "trigger": trigger},
            ))  # fmt: skip
        self._audit.committed(record)

    def record_drain(self, action: str, **details: object) -> None:
        """Audit a step of this node's drain: ``node.draining`` (it began) or
        ``node.drained`` (the last sessions ended; the node stops)."""
        self._audit.record(Trail.HUMAN, AuditEvent(
            actor=f"gateway:{self.name}", actor_type=ActorType.GATEWAY, action=action,
            outcome="success", target=f"node:{self.name}", authority="pamgate node drain",
            reason=DRAINED_REASON if action == "node.drained" else "",
            details=dict(details),
        ))  # fmt: skip

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)
