"""The session ledger: every relayed session, from start to end, in the store.

Each start and end is also written as one structured (JSON) log line through
:func:`gateway.eventlog.emit`: user, target, account, source, bytes, exit
status. The hash-chained audit trail plugs in at :class:`SessionEventSink`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import select

from gateway.eventlog import emit
from gateway.models import SessionRecord
from gateway.store import Store


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


@dataclass(frozen=True)
class SessionEnd:
    """How a session ended."""

    status: str
    bytes_to_target: int = 0
    bytes_from_target: int = 0
    exit_status: int | None = None
    exit_signal: str | None = None
    reason: str = ""


class SessionEventSink(Protocol):
    """Receives session start and end events (the seam for the audit trail)."""

    def session_started(self, session_id: str, start: SessionStart) -> None: ...

    def session_ended(self, session_id: str, start: SessionStart, end: SessionEnd) -> None: ...


class JsonLogSink:
    """Writes each session event as one JSON log line."""

    def session_started(self, session_id: str, start: SessionStart) -> None:
        emit("session.start", session=session_id, **asdict(start))

    def session_ended(self, session_id: str, start: SessionStart, end: SessionEnd) -> None:
        emit("session.end", session=session_id, **asdict(start), **asdict(end))


class SessionLedger:
    """Records sessions in the store and reports them to a sink."""

    def __init__(
        self,
        store: Store,
        node: str,
        sink: SessionEventSink | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._node = node
        self._sink = sink or JsonLogSink()
        self._clock = clock

    @staticmethod
    def new_session_id() -> str:
        """A fresh, unguessable session id."""
        return uuid.uuid4().hex

    def open(self, session_id: str, start: SessionStart) -> None:
        """Record a session as live. Raises StoreError if it cannot be recorded."""
        with self._store.transaction() as db:
            db.add(
                SessionRecord(
                    id=session_id,
                    lane=start.lane,
                    node=self._node,
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
                )
            )
        self._sink.session_started(session_id, start)

    def close(self, session_id: str, start: SessionStart, end: SessionEnd) -> None:
        """Record how a session ended."""
        with self._store.transaction() as db:
            record = db.get(SessionRecord, session_id)
            if record is not None:
                record.status = end.status
                record.ended_at = self._now()
                record.bytes_to_target = end.bytes_to_target
                record.bytes_from_target = end.bytes_from_target
                record.exit_status = end.exit_status
                record.exit_signal = end.exit_signal
                record.reason = end.reason
        self._sink.session_ended(session_id, start, end)

    def mark_interrupted(self) -> int:
        """Mark this node's sessions still ``live`` as ``interrupted`` (after a crash).

        Returns how many were marked.
        """
        with self._store.transaction() as db:
            stale = db.scalars(
                select(SessionRecord).where(
                    SessionRecord.node == self._node, SessionRecord.status == "live"
                )
            ).all()
            for record in stale:
                record.status = "interrupted"
                record.reason = "gateway stopped while the session was live"
                record.ended_at = self._now()
            return len(stale)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)
