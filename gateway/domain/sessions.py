"""The session ledger: every relayed session, from start to end, in the store.

Opening a session writes its row and its ``session.start`` audit event in one
transaction: if either fails, neither exists and the session is refused.
Closing writes ``session.end`` the same way, with bytes and exit status.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.domain.audit.trail import (
    ActorType,
    AuditEvent,
    AuditLog,
    AuditRecord,
    Trail,
    admin_authority,
)
from gateway.errors import PamgateError
from gateway.store.database import Store
from gateway.store.models import SessionRecord


@dataclass(frozen=True)
class SessionStart:
    """What is known when a session is admitted."""

    lane: str
    user: str
    target: str
    account: str
    source: str
    authority: str
    kind: str
    command: str | None = None

    @property
    def trail(self) -> Trail:
        return Trail.of_lane(self.lane)

    @property
    def actor_type(self) -> ActorType:
        return ActorType.MACHINE if self.lane == "machine" else ActorType.HUMAN


@dataclass(frozen=True)
class LiveSession:
    """A session as the console lists it."""

    id: str
    lane: str
    node: str
    user: str
    target: str
    account: str
    source: str
    authority: str
    kind: str
    command: str | None
    status: str
    started_at: datetime
    recording_path: str | None


class SessionNotFound(PamgateError):
    """No such session, or not in a state that allows what was asked."""


@dataclass(frozen=True)
class SessionEnd:
    """How a session ended."""

    status: str
    bytes_to_target: int = 0
    bytes_from_target: int = 0
    exit_status: int | None = None
    exit_signal: str | None = None
    reason: str = ""
    #: The sealed recording (relative path and sha256), when there is one.
    recording_path: str | None = None
    recording_sha256: str | None = None
    #: Extra facts for the end event (exec stream digests, truncation, ...).
    details: dict[str, object] | None = None


class SessionLedger:
    """Records sessions in the store and in the audit trail of their lane."""

    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        node: str,
        *,
        worker: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._audit = audit
        self._node = node
        #: The relay worker process of ``node`` this ledger opens sessions in (None: the
        #: node relays in one process). A dead worker's sessions are found by it.
        self._worker = worker
        self._clock = clock

    @staticmethod
    def new_session_id() -> str:
        """A fresh, unguessable session id."""
        return uuid.uuid4().hex

    def open(
        self, session_id: str, start: SessionStart, *, recording_path: str | None = None
    ) -> None:
        """Record a session as live. Raises StoreError (refuse the session) on failure."""
        with self._store.transaction() as db:
            db.add(
                SessionRecord(
                    id=session_id,
                    lane=start.lane,
                    node=self._node,
                    worker=self._worker,
                    user=start.user,
                    target=start.target,
                    account=start.account,
                    source=start.source,
                    authority=start.authority,
                    kind=start.kind,
                    command=start.command,
                    status="live",
                    started_at=self._now(),
                    reason="",
                    recording_path=recording_path,
                )
            )
            details: dict[str, object] = {"recording": recording_path}
            if self._worker is not None:
                details["worker"] = self._worker
            event = self._event(session_id, start, details=details)
            record = self._audit.append(db, start.trail, event)
        self._audit.committed(record)

    def close(self, session_id: str, start: SessionStart, end: SessionEnd) -> None:
        """Record how a session ended."""
        details = {
            "status": end.status,
            "bytes_to_target": end.bytes_to_target,
            "bytes_from_target": end.bytes_from_target,
            "exit_status": end.exit_status,
            "exit_signal": end.exit_signal,
            "recording": end.recording_path,
            "recording_sha256": end.recording_sha256,
            **(end.details or {}),
        }
        with self._store.transaction() as db:
            row = db.get(SessionRecord, session_id)
            if row is not None:
                row.status = end.status
                row.ended_at = self._now()
                row.bytes_to_target = end.bytes_to_target
                row.bytes_from_target = end.bytes_from_target
                row.exit_status = end.exit_status
                row.exit_signal = end.exit_signal
                row.reason = end.reason
                if end.recording_path is not None:
                    row.recording_path = end.recording_path
                    row.recording_sha256 = end.recording_sha256
            event = self._event(
                session_id,
                start,
                action="session.end",
                outcome="success" if end.status == "closed" else "failure",
                reason=end.reason,
                details=details,
            )
            record = self._audit.append(db, start.trail, event)
        self._audit.committed(record)

    def live(self) -> list[LiveSession]:
        """Sessions live right now, on every node, oldest first."""
        with self._store.transaction(write=False) as db:
            rows = db.scalars(
                select(SessionRecord)
                .where(SessionRecord.status == "live")
                .order_by(SessionRecord.started_at)
            )
            return [_live(row) for row in rows]

    def get(self, session_id: str) -> LiveSession:
        """One session (live or not) by id; SessionNotFound if there is none."""
        with self._store.transaction(write=False) as db:
            row = db.get(SessionRecord, session_id)
            if row is None:
                raise SessionNotFound(f"no session {session_id!r}")
            return _live(row)

    def with_authority(self, authority: str, *, limit: int = 200) -> list[LiveSession]:
        """Sessions (live or ended) that ran under ``authority`` (``grant:N``, ``breakglass:N``)."""
        with self._store.transaction(write=False) as db:
            rows = db.scalars(
                select(SessionRecord)
                .where(
                    (SessionRecord.authority == authority)
                    | SessionRecord.authority.startswith(authority + ";")
                )
                .order_by(SessionRecord.started_at)
                .limit(limit)
            )
            return [_live(row) for row in rows]

    def request_termination(self, session_id: str, *, actor: str, reason: str) -> None:
        """Ask for a live session to end; the node relaying it ends it within ~2 s.

        The user is shown ``reason``. Audited in the session's trail.
        """
        if not reason.strip():
            raise SessionNotFound("a reason is required to terminate a session")
        with self._store.transaction() as db:
            row = db.get(SessionRecord, session_id, with_for_update=True)
            if row is None or row.status != "live":
                raise SessionNotFound(f"session {session_id!r} is not live")
            row.terminate_reason, row.terminate_by = reason.strip(), actor
            trail = Trail.of_lane(row.lane)
            record = self._audit.append(db, trail, AuditEvent(
                actor=actor, actor_type=ActorType.HUMAN, action="session.terminate_requested",
                target=row.target, account=row.account, session_id=row.id, reason=reason.strip(),
                authority=admin_authority(actor), details={"user": row.user, "lane": row.lane},
            ))  # fmt: skip
        self._audit.committed(record)

    def termination_requested(self, session_id: str) -> str | None:
        """Why someone asked for this session to end, or None."""
        return self.termination_requests([session_id]).get(session_id)

    def termination_requests(self, session_ids: Collection[str]) -> dict[str, str]:
        """Why someone asked for each of these sessions to end, for those they did (one query)."""
        if not session_ids:
            return {}
        query = select(SessionRecord.id, SessionRecord.terminate_by, SessionRecord.terminate_reason)
        query = query.where(
            SessionRecord.id.in_(list(session_ids)), SessionRecord.terminate_reason.is_not(None)
        )
        with self._store.transaction(write=False) as db:
            return {
                session_id: f"terminated by {by}: {reason}"
                for session_id, by, reason in db.execute(query)
            }

    def mark_interrupted(self, *, worker: int | None = None) -> list[str]:
        """Mark this node's sessions still ``live`` as ``interrupted`` (after a crash).

        Only this node's: other nodes sharing the database keep theirs; with
        ``worker``, only those of that relay worker process (it died, the node
        runs on). Each gets a ``session.interrupted`` audit event. Returns their ids.
        """
        reason = "gateway stopped while the session was live"
        if worker is not None:
            reason = f"relay worker {worker} of the gateway died while the session was live"
        with self._store.transaction() as db:
            records = self.interrupt_in(db, self._node, reason=reason, worker=worker)
        for record in records:
            self._audit.committed(record)
        return [record.session_id for record in records if record.session_id]

    def interrupt_in(
        self, db: Session, node: str, *, reason: str, worker: int | None = None
    ) -> list[AuditRecord]:
        """Inside ``db``, mark ``node``'s live sessions (only relay worker ``worker``'s,
        if given) ``interrupted``, each audited.

        They also get a termination request, so that if ``node`` is in fact
        still running (cut off, not dead), its relays end them. The caller
        commits, then passes the records to :meth:`AuditLog.committed`.
        """
        query = select(SessionRecord).where(
            SessionRecord.node == node, SessionRecord.status == "live"
        )
        if worker is not None:
            query = query.where(SessionRecord.worker == worker)
        stale = db.scalars(query.with_for_update()).all()
        records = []
        for row in stale:
            row.status = "interrupted"
            row.reason = reason
            row.ended_at = self._now()
            row.terminate_reason, row.terminate_by = reason, f"gateway:{self._node}"
            event = AuditEvent(
                actor=f"gateway:{self._node}",
                actor_type=ActorType.GATEWAY,
                action="session.interrupted",
                outcome="failure",
                target=row.target,
                account=row.account,
                session_id=row.id,
                source=row.source,
                reason=reason,
                authority=row.authority,
                details={"user": row.user, "node": node},
            )
            records.append(self._audit.append(db, Trail.of_lane(row.lane), event))
        return records

    def _event(
        self,
        session_id: str,
        start: SessionStart,
        *,
        action: str = "session.start",
        outcome: str = "success",
        reason: str = "",
        details: dict[str, object] | None = None,
    ) -> AuditEvent:
        return AuditEvent(
            actor=start.user,
            actor_type=start.actor_type,
            action=action,
            outcome=outcome,
            reason=reason,
            target=start.target,
            account=start.account,
            session_id=session_id,
            source=start.source,
            authority=start.authority,
            details={
                "kind": start.kind,
                "command": start.command,
                "node": self._node,
                **(details or {}),
            },
        )

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)


def _live(row: SessionRecord) -> LiveSession:
    return LiveSession(
        id=row.id, lane=row.lane, node=row.node, user=row.user, target=row.target,
        account=row.account, source=row.source, authority=row.authority, kind=row.kind,
        command=row.command, status=row.status, started_at=row.started_at,
        recording_path=row.recording_path,
    )  # fmt: skip
