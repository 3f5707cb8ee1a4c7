"""Audit trails: one hash chain for humans, one for machines.

Each event has a per-trail sequence number and ``hash = sha256(canonical
serialisation of the event, including prev_hash)``, so an edit, deletion,
insertion or reordering anywhere breaks the chain at a named event.
Checkpoints (signed head hashes, see :mod:`gateway.domain.audit.checkpoints`) catch the
one thing a chain alone cannot: truncating the tail, or rewriting all of it.

The write is part of the action (fail closed): callers append inside the same
database transaction as the change they record, or treat
:class:`AuditWriteFailed` as "the action did not happen". Appends lock the
trail's head row (``SELECT ... FOR UPDATE``; on SQLite the transaction's
``BEGIN IMMEDIATE``), so concurrent writers, in one process or several,
never fork the chain. On PostgreSQL one statement does it all
(``pamgate_audit_append``, migration 0013), so the lock is held while the
statement runs and commits rather than across client round trips; callers in
one process share each commit (group commit, :meth:`AuditLog.record`).

Plain Python over the store; no sockets.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from gateway.domain.audit.actors import LOCAL_ADMIN_AUTHORITY, ActingOperator
from gateway.errors import PamgateError, StoreError
from gateway.store.database import Store
from gateway.store.models import AuditHead, HumanAuditEvent, MachineAuditEvent

logger = logging.getLogger("pamgate.audit")

GENESIS_HASH = "0" * 64
#: Verification reports progress every this many events.
PROGRESS_EVERY = 100_000
#: Verification reads the chain this many rows at a time.
CHAIN_FETCH_ROWS = 20_000

#: Fields in the order they appear in exports; all of them are hashed.
RECORD_FIELDS = (
    "trail", "seq", "ts", "actor", "actor_type", "action", "target", "account",
    "session_id", "source", "outcome", "reason", "authority", "details", "prev_hash",
)  # fmt: skip

#: Successful actions that grant or use privilege, which must name their authority.
PRIVILEGED_ACTIONS = frozenset(
    {
        "session.start",
        "user.created",
        "user.disabled",
        "user.enabled",
        "user.mfa_reset",
        "user.password_set",
        "user.key_added",
        "user.unlocked",
        "user.groups_set",
        "login_cert.issued",
        "login_cert.revoked",
        "ca.created",
        "gateway.started",
        "gateway.stopped",
        "machine.created",
        "machine.suspended",
        "machine.resumed",
        "machine.offboarded",
        "machine.scope_narrowed",
        "review.started",
        "review.decided",
        "machine.certificate_issued",
        "machine.token_created",
        "machine.joined",
        "machine.renewed",
        "machine.revoked",
        "machine.tokens_revoked",
        "auth.accepted",
        "command.allowed",
    }
)


class Trail(StrEnum):
    """The two separate audit trails."""

    HUMAN = "human"
    MACHINE = "machine"

    @classmethod
    def of_lane(cls, lane: str) -> Trail:
        """The trail a lane's events go to: the machine lane's to MACHINE, the rest to HUMAN."""
        return cls.MACHINE if lane == "machine" else cls.HUMAN


class ActorType(StrEnum):
    """Who did something: a person, a non-human identity, an administrator, or the gateway."""

    HUMAN = "human"
    MACHINE = "machine"
    ADMIN = "admin"
    GATEWAY = "gateway"


class AuditWriteFailed(StoreError):
    """The audit record could not be written, so the action must not happen."""


class MissingAuthority(PamgateError):
    """A privileged action was about to be recorded without what allowed it (a bug)."""


_TABLES: dict[Trail, type[HumanAuditEvent] | type[MachineAuditEvent]] = {
    Trail.HUMAN: HumanAuditEvent,
    Trail.MACHINE: MachineAuditEvent,
}


@dataclass(frozen=True)
class AuditEvent:
    """What happened, before it gets a place in a trail."""

    actor: str
    actor_type: ActorType
    action: str
    outcome: str = "success"
    target: str | None = None
    account: str | None = None
    session_id: str | None = None
    source: str | None = None
    reason: str = ""
    authority: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # An operator's action: the event names them plainly and says where the action
        # came from (``via_session``), whichever service built it.
        if isinstance(self.actor, ActingOperator):
            object.__setattr__(self, "details", {**self.actor.details, **self.details})
            object.__setattr__(self, "actor", str(self.actor))


@dataclass(frozen=True)
class AuditRecord:
    """An event as stored in a trail, with its place in the chain."""

    trail: str
    seq: int
    ts: str
    actor: str
    actor_type: str
    action: str
    target: str | None
    account: str | None
    session_id: str | None
    source: str | None
    outcome: str
    reason: str
    authority: str | None
    details: str
    prev_hash: str
    hash: str

    def to_json(self) -> str:
        """One JSON object, ``details`` expanded, for exports and SIEMs."""
        data = asdict(self)
        data["details"] = json.loads(self.details)
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of verifying a trail."""

    trail: str
    ok: bool
    count: int
    first_bad_seq: int | None = None
    problem: str = ""
    head_hash: str = GENESIS_HASH


def canonical_details(details: dict[str, Any]) -> str:
    """Canonical JSON text for an event's details."""
    return json.dumps(
        details, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )


#: The canonical serialisation: a compact JSON array of the fields in RECORD_FIELDS order.
_CANONICAL = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
#: The fields between seq and prev_hash: serialised by the writer even where the
#: database chains the events (it adds seq and prev_hash, see _chain_in_database).
_MIDDLE_FIELDS = RECORD_FIELDS[2:-1]


def record_hash(values: dict[str, Any]) -> str:
    """sha256 over the canonical serialisation of an event's fields (prev_hash included)."""
    return _hash_fields([values[name] for name in RECORD_FIELDS])


def _hash_fields(fields: list[Any]) -> str:
    return hashlib.sha256(_CANONICAL(fields).encode("utf-8")).hexdigest()


def admin_authority(actor: str) -> str:
    """What allowed an administrative action by ``actor`` (see :mod:`.actors`).

    An :class:`ActingOperator` says so itself: the role of a pamgate user
    (``role:admin``), or ``local-admin`` for the local administrator. A plain
    name is the gateway's own code acting on the host's authority (``pamgate
    demo`` setting up its users): ``local-admin`` as well.
    """
    if isinstance(actor, ActingOperator):
        return actor.authority
    return LOCAL_ADMIN_AUTHORITY


class AuditLog:
    """Appends to, reads and verifies the audit trails."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._sql = _AppendStatements(store.engine.dialect.paramstyle, store.is_sqlite)
        self._queue_lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._writing = False
        self._listeners: list[Callable[[AuditRecord], None]] = []
        self._timing = threading.local()
        #: PostgreSQL: the connection group commits are written on (see _write_batch).
        self._writer: Any = None
        self._writer_lock = threading.Lock()

    def append_seconds(self) -> float | None:
        """How long this thread's latest :meth:`record` took, queueing and commit included.

        For the listeners :meth:`record` calls (in its thread) once it has
        committed, e.g. the metrics; None in a thread that has not recorded.
        """
        return getattr(self._timing, "seconds", None)

    @property
    def store(self) -> Store:
        """The database the trails live in."""
        return self._store

    def add_listener(self, listener: Callable[[AuditRecord], None]) -> None:
        """Call ``listener`` with every record after it is committed, in the writer's
        thread: it must be quick (the syslog copy only wakes its worker)."""
        self._listeners.append(listener)

    # -- writing ----------------------------------------------------------

    def record(self, trail: Trail, event: AuditEvent) -> AuditRecord:
        """Append ``event`` in its own transaction; return once it is committed.

        Raises AuditWriteFailed (the caller's action must not happen).

        Concurrent callers share commits (group commit): the first caller to
        find no write in progress writes everything queued, in one
        transaction, until the queue is empty; the others wait for theirs.
        Order within a trail is arrival order.
        """
        _check_authority(event)
        started = time.perf_counter()
        pending = _Pending(trail, event)
        with self._queue_lock:
            self._queue.append(pending)
            lead = not self._writing
            self._writing = True
        if lead:
            self._drain()
        pending.wait()
        if pending.error is not None:
            raise AuditWriteFailed(
                f"cannot write the {trail} audit trail: {pending.error}"
            ) from pending.error
        assert pending.record is not None
        self._timing.seconds = time.perf_counter() - started
        self.committed(pending.record)
        return pending.record

    def _drain(self) -> None:
        while True:
            with self._queue_lock:
                batch, self._queue = self._queue, []
                if not batch:
                    self._writing = False
                    return
            try:
                records = self._write_batch([(p.trail, p.event) for p in batch])
            except Exception as exc:  # every waiter must wake, whatever went wrong
                for waiting in batch:
                    waiting.error = exc
                    waiting.finish()
                continue
            for waiting, stored in zip(batch, records, strict=True):
                waiting.record = stored
                waiting.finish()

    def _write_batch(self, items: list[tuple[Trail, AuditEvent]]) -> list[AuditRecord]:
        """Write a group commit's events, each durable when this returns.

        SQLite: one ``BEGIN IMMEDIATE`` transaction for the batch. PostgreSQL: one
        statement per trail, each its own transaction, on the connection this log
        keeps for its group commits (one batch is written at a time): the statement's
        cost is then the driver's alone, not a pool checkout and a SQLAlchemy execution.
        """
        if self._store.is_sqlite:
            with self._store.connection() as connection:
                return self._append(connection, items)
        with self._writer_lock:
            if self._writer is None:
                self._writer = self._store.engine.raw_connection()
                self._writer.driver_connection.autocommit = True
            cursor = self._writer.cursor()

            def execute(sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
                cursor.execute(sql, params)
                return list(cursor.fetchall())

            try:
                return self._chain_in_database(execute, items)
            except Exception:
                # A broken connection is not reused; the next batch opens another.
                self._writer.invalidate()
                self._writer = None
                raise

    def append(self, db: Session, trail: Trail, event: AuditEvent) -> AuditRecord:
        """Append ``event`` inside the caller's transaction ``db``.

        The event is part of that transaction: if it rolls back, so does the
        event. Call :meth:`committed` after the commit to notify listeners.
        """
        _check_authority(event)
        db.flush()  # the caller's pending changes go first, in order
        return self._append(db.connection(), [(trail, event)])[0]

    def _append(
        self, connection: Connection, items: list[tuple[Trail, AuditEvent]]
    ) -> list[AuditRecord]:
        """Chain and insert ``items`` in order; one head read and write per trail."""
        if self._sql.append_function is not None:

            def execute(sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
                return [tuple(row) for row in connection.exec_driver_sql(sql, params)]

            return self._chain_in_database(execute, items)
        sql = self._sql
        heads: dict[Trail, tuple[int, str]] = {}
        rows: dict[Trail, list[dict[str, Any]]] = {}
        records = []
        for trail, event in items:
            if trail not in heads:
                found = connection.exec_driver_sql(sql.select_head, {"trail": trail.value}).first()
                if found is None:
                    # The trail's first event. Another node may be creating the head
                    # at this very moment: whoever loses waits, then locks the winner's.
                    connection.exec_driver_sql(
                        sql.insert_head, {"trail": trail.value, "seq": 0, "hash": GENESIS_HASH}
                    )
                    found = connection.exec_driver_sql(
                        sql.select_head, {"trail": trail.value}
                    ).first()
                # Never None: the head row was just read, or inserted and read back.
                heads[trail] = tuple(found)  # type: ignore[arg-type]
            head_seq, head_hash = heads[trail]
            values = self._values(trail, event, head_seq + 1, head_hash)
            values["hash"] = record_hash(values)
            heads[trail] = (values["seq"], values["hash"])
            rows.setdefault(trail, []).append(values)
            records.append(AuditRecord(**values))
        for trail, trail_rows in rows.items():
            connection.exec_driver_sql(sql.insert_event[trail], trail_rows)
            connection.exec_driver_sql(sql.update_head, trail_rows[-1])
        return records

    def _values(self, trail: Trail, event: AuditEvent, seq: int, prev_hash: str) -> dict[str, Any]:
        """The stored fields of ``event`` as event ``seq`` after ``prev_hash`` (no hash yet)."""
        return {
            "trail": trail.value,
            "seq": seq,
            "ts": datetime.fromtimestamp(self._clock(), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "actor": event.actor,
            "actor_type": str(event.actor_type),
            "action": event.action,
            "target": event.target,
            "account": event.account,
            "session_id": event.session_id,
            "source": event.source,
            "outcome": event.outcome,
            "reason": event.reason,
            "authority": event.authority,
            "details": canonical_details(event.details),
            "prev_hash": prev_hash,
        }

    def _chain_in_database(
        self,
        execute: Callable[[str, dict[str, Any]], list[tuple[Any, ...]]],
        items: list[tuple[Trail, AuditEvent]],
    ) -> list[AuditRecord]:
        """PostgreSQL: chain and insert each trail's events in one statement.

        ``pamgate_audit_append`` (migration 0013) locks the head, gives each row its seq
        and prev_hash, and hashes the canonical serialisation this side sends for the
        other fields; the statement is the whole transaction when ``connection`` is in
        autocommit, so the head stays locked only while it runs and commits.
        """
        assert self._sql.append_function is not None
        by_trail: dict[Trail, list[tuple[int, dict[str, Any]]]] = {}
        for position, (trail, event) in enumerate(items):
            values = self._values(trail, event, 0, "")
            by_trail.setdefault(trail, []).append((position, values))
        records: list[AuditRecord | None] = [None] * len(items)
        for trail, entries in by_trail.items():
            rows = []
            for _, values in entries:
                middle = [values[name] for name in _MIDDLE_FIELDS]
                rows.append(
                    {name: values[name] for name in _MIDDLE_FIELDS}
                    | {"canonical_middle": "," + _CANONICAL(middle)[1:-1]}
                )
            chained = execute(
                self._sql.append_function,
                {"trail": trail.value, "rows": json.dumps(rows, ensure_ascii=False)},
            )
            if len(chained) != len(entries):
                raise StoreError(f"the {trail} trail took {len(chained)} of {len(entries)} events")
            for (position, values), (seq, prev_hash, hash_) in zip(entries, chained, strict=True):
                values.update(seq=seq, prev_hash=prev_hash, hash=hash_)
                records[position] = AuditRecord(**values)
        return [record for record in records if record is not None]

    def committed(self, record: AuditRecord) -> None:
        """Tell the log line and listeners about a committed record (never raises)."""
        # Also one JSON line in the gateway log, for operators reading it live.
        if logger.isEnabledFor(logging.INFO):
            line = {"event": record.action, "trail": record.trail, "seq": record.seq}
            line.update(_log_fields(record))
            logger.info(json.dumps(line, default=str))
        for listener in self._listeners:
            try:
                listener(record)
            except Exception:  # a copy failing must not undo the action
                logger.exception("audit listener failed")

    # -- reading ------------------------------------------------------------

    def head(self, trail: Trail) -> tuple[int, str]:
        """The trail's newest sequence number and hash (0 and the genesis hash if empty)."""
        with self._store.transaction(write=False) as db:
            head = db.get(AuditHead, trail.value)
            return (head.seq, head.hash) if head else (0, GENESIS_HASH)

    def events(
        self,
        trail: Trail,
        *,
        after_seq: int = 0,
        until_seq: int | None = None,
        since: datetime | None = None,
        batch: int = 5000,
    ) -> Iterator[AuditRecord]:
        """Events in sequence order, streamed in batches (constant memory)."""
        table = _TABLES[trail]
        since_text = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if since else None
        last = after_seq
        while True:
            with self._store.transaction(write=False) as db:
                query = select(*_columns(table)).where(table.seq > last)
                if since_text:
                    query = query.where(table.ts >= since_text)
                if until_seq is not None:
                    query = query.where(table.seq <= until_seq)
                rows = db.execute(query.order_by(table.seq).limit(batch)).all()
            for row in rows:
                yield AuditRecord(trail.value, *row)
            if len(rows) < batch:
                return
            last = rows[-1][0]

    def tail(self, trail: Trail, count: int) -> list[AuditRecord]:
        """The newest ``count`` events, oldest first."""
        seq, _ = self.head(trail)
        return list(self.events(trail, after_seq=max(seq - count, 0)))

    # -- verification --------------------------------------------------------

    def verify(
        self, trail: Trail, *, progress: Callable[[int], None] | None = None
    ) -> VerifyResult:
        """Walk the chain up to its current head; report the first event that breaks it.

        The head, the chain and the check for events beyond the head are read in
        one snapshot (:meth:`Store.snapshot`), so events other writers commit
        meanwhile are neither a false alarm nor seen; they are left for the next run.
        """
        with self._store.snapshot() as connection:
            return self._verify_in(connection, trail, progress)

    def _verify_in(
        self, connection: Connection, trail: Trail, progress: Callable[[int], None] | None
    ) -> VerifyResult:
        head = connection.execute(
            select(AuditHead.seq, AuditHead.hash).where(AuditHead.trail == trail.value)
        ).first()
        head_seq, head_hash = (head[0], head[1]) if head else (0, GENESIS_HASH)
        expected, prev = 1, GENESIS_HASH
        count = 0
        name = trail.value
        # The hot loop of a million-event verify: locals only, one encode and one hash a row.
        encode, sha256 = _CANONICAL, hashlib.sha256
        for row in self._chain_rows(connection, trail, head_seq):
            # row: seq, ts, ..., prev_hash, hash (the stored columns in RECORD_FIELDS order)
            seq = row[0]
            if seq != expected:  # rows come in seq order, so this is a gap
                missing = (
                    f"event {expected} is" if seq == expected + 1
                    else f"events {expected}..{seq - 1} are"
                )  # fmt: skip
                return VerifyResult(trail, False, count, expected, f"{missing} missing (deleted)")
            if row[-2] != prev:
                return VerifyResult(
                    trail, False, count, seq,
                    f"event {seq} ({_describe(row)}): prev_hash does not match event "
                    f"{seq - 1} (events inserted, deleted or reordered)",
                )  # fmt: skip
            stored = row[-1]
            if sha256(encode([name, *row[:-1]]).encode()).hexdigest() != stored:
                return VerifyResult(
                    trail, False, count, seq,
                    f"event {seq} ({_describe(row)}): contents do not match its hash (edited)",
                )  # fmt: skip
            prev = stored
            expected += 1
            count += 1
            if progress is not None and count % PROGRESS_EVERY == 0:
                progress(count)
        if head_seq != count or head_hash != prev:
            return VerifyResult(
                trail, False, count, count + 1,
                f"the trail ends at event {count} but its head records event {head_seq} "
                "(events removed from the end)",
            )  # fmt: skip
        table = _TABLES[trail]
        stray = connection.scalar(
            select(table.seq).where(table.seq > head_seq).order_by(table.seq).limit(1)
        )
        if stray is not None:
            return VerifyResult(
                trail, False, count, stray,
                f"event {stray} lies beyond the trail's head (inserted)",
            )  # fmt: skip
        return VerifyResult(trail, True, count, head_hash=prev)

    def _chain_rows(
        self, connection: Connection, trail: Trail, until_seq: int
    ) -> Iterator[tuple[Any, ...]]:
        """All stored columns of events 1..until_seq as plain tuples, streamed.

        Straight from the driver's cursor (a server-side cursor on PostgreSQL), inside
        ``connection``'s transaction: building SQLAlchemy rows would cost more than
        hashing them.
        """
        columns = ", ".join([*RECORD_FIELDS[1:], "hash"])
        marker = "%s" if self._store.engine.dialect.paramstyle in ("format", "pyformat") else "?"
        query = (
            f"SELECT {columns} FROM {_TABLES[trail].__tablename__} "
            f"WHERE seq <= {marker} ORDER BY seq"
        )
        errors: tuple[type[BaseException], ...] = (SQLAlchemyError, *_driver_errors(connection))
        try:
            driver = connection.connection.driver_connection
            assert driver is not None
            if self._store.is_sqlite:
                cursor = driver.cursor()
            else:
                cursor = driver.cursor(name=f"pamgate_verify_{trail.value}")
                cursor.itersize = CHAIN_FETCH_ROWS
            try:
                cursor.execute(query, (until_seq,))
                while rows := cursor.fetchmany(CHAIN_FETCH_ROWS):
                    yield from rows
            finally:
                cursor.close()
        except errors as exc:
            raise StoreError(f"cannot read the {trail} audit trail: {exc}") from exc

    def hash_at(self, trail: Trail, seq: int) -> str | None:
        """The stored hash of event ``seq``, or None if there is none."""
        table = _TABLES[trail]
        with self._store.transaction(write=False) as db:
            return db.scalar(select(table.hash).where(table.seq == seq))


def _check_authority(event: AuditEvent) -> None:
    if event.outcome == "success" and event.action in PRIVILEGED_ACTIONS and not event.authority:
        raise MissingAuthority(f"{event.action} by {event.actor} has no authority")


class _Pending:
    """One caller's event waiting in the group-commit queue."""

    def __init__(self, trail: Trail, event: AuditEvent) -> None:
        self.trail = trail
        self.event = event
        # A lock taken now and released by the writer: cheaper to block on than an
        # Event (no condition variable), and appends are the hottest wait there is.
        self._done = threading.Lock()
        self._done.acquire()
        self.record: AuditRecord | None = None
        self.error: BaseException | None = None

    def finish(self) -> None:
        """The writer is done with this event (stored, or failed): wake its caller."""
        self._done.release()

    def wait(self) -> None:
        """Block until :meth:`finish`."""
        self._done.acquire()


class _AppendStatements:
    """The SQL of an append, rendered once for the database's parameter style.

    Appends run on every login and session, so they skip SQLAlchemy's
    statement compilation (which costs more than the database work itself).
    """

    def __init__(self, paramstyle: str, is_sqlite: bool) -> None:
        def param(name: str) -> str:
            return f"%({name})s" if paramstyle == "pyformat" else f":{name}"

        # SQLite serialises writers with BEGIN IMMEDIATE; others lock the head row
        # (PostgreSQL's READ COMMITTED then reads the head as the previous writer left it).
        lock = "" if is_sqlite else " FOR UPDATE"
        self.select_head = f"SELECT seq, hash FROM audit_heads WHERE trail = {param('trail')}{lock}"
        self.insert_head = (
            "INSERT INTO audit_heads (trail, seq, hash) "
            f"VALUES ({param('trail')}, {param('seq')}, {param('hash')}) "
            "ON CONFLICT (trail) DO NOTHING"
        )
        self.update_head = (
            f"UPDATE audit_heads SET seq = {param('seq')}, hash = {param('hash')} "
            f"WHERE trail = {param('trail')}"
        )
        #: PostgreSQL chains in one statement (migration 0013); None on SQLite.
        self.append_function = (
            None
            if is_sqlite
            else f"SELECT out_seq, out_prev_hash, out_hash FROM pamgate_audit_append("
            f"{param('trail')}, {param('rows')}::json)"
        )
        columns = [*RECORD_FIELDS[1:], "hash"]
        self.insert_event = {
            trail: f"INSERT INTO {_TABLES[trail].__tablename__} ({', '.join(columns)}) "
            f"VALUES ({', '.join(param(c) for c in columns)})"
            for trail in Trail
        }


def _driver_errors(connection: Connection) -> tuple[type[BaseException], ...]:
    """The database driver's own error class (raised by its cursor, not by SQLAlchemy)."""
    error = getattr(connection.dialect.dbapi, "Error", None)
    return (error,) if isinstance(error, type) else ()


def _describe(row: tuple[Any, ...]) -> str:
    """``action by actor`` for a raw trail row (as stored, which may be edited)."""
    values = dict(zip(RECORD_FIELDS[1:], row, strict=False))
    return f"{values['action']} by {values['actor']}"


def _columns(table: type[HumanAuditEvent] | type[MachineAuditEvent]) -> list[Any]:
    return [getattr(table, name) for name in RECORD_FIELDS[1:]] + [table.hash]


def _log_fields(record: AuditRecord) -> dict[str, Any]:
    fields = {
        "actor": record.actor,
        "actor_type": record.actor_type,
        "outcome": record.outcome,
        "target": record.target,
        "account": record.account,
        "session": record.session_id,
        "source": record.source,
        "reason": record.reason or None,
        "authority": record.authority,
    }
    fields.update(json.loads(record.details))
    return {k: v for k, v in fields.items() if v is not None}
