"""Session recordings as the gateway uses them: where they live, sealing, commands, lookup.

The file format, extraction and playback are in :mod:`recordings`; where the
files live is up to :mod:`gateway.domain.recordings.storage` (a folder all nodes
share, ``RECORDINGS/YYYY/MM/DD/<session>.cast``, or an S3-compatible bucket). This
module keeps the one flusher, stores each sealed recording's sha256 with its
session, extracts commands off the relay (in the indexing worker: every few
seconds while a session runs, and once over the sealed recording), audits each new command
(``command.executed``) and answers the CLI's and console's questions (list,
search, verify, export; refusals and failed verifications are audited too).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import IO, Any

from sqlalchemy import delete, func, or_, select, update

from gateway.config import GatewayConfig
from gateway.domain.audit.trail import (
    ActorType,
    AuditEvent,
    AuditLog,
    AuditRecord,
    Trail,
    admin_authority,
)
from gateway.domain.recordings.storage import RecordingStore, open_recording_store
from gateway.errors import PamgateError
from gateway.store.database import Store
from gateway.store.models import SessionCommand, SessionRecord
from recordings.asciicast import (
    Event,
    Flusher,
    RecordingError,
    RecordingWriter,
    SealedRecording,
    TornLine,
    decode_event,
    file_sha256,
    iter_events,
    open_text,
    read_header,
)
from recordings.commands import (
    REQUEST,
    Command,
    CommandExtractor,
    input_line_commands,
)

logger = logging.getLogger("pamgate.recordings")


#: Live sessions whose extraction state one worker keeps (about 200 KB each).
MAX_LIVE_EXTRACTIONS = 1000


class RecordingUnavailable(PamgateError):
    """A session cannot be recorded, so it must not happen."""


class UnknownSession(PamgateError):
    """No session (or no recording) matches what was asked for."""


class RecordingTampered(PamgateError):
    """A sealed recording no longer matches the sha256 stored when it was sealed."""


@dataclass(frozen=True)
class RecordingInfo:
    """A recorded session, for listings."""

    session_id: str
    lane: str
    user: str
    target: str
    account: str
    kind: str
    status: str
    started_at: datetime
    ended_at: datetime | None
    sha256: str | None
    #: What allowed the session: ``grant:N``, ``breakglass:N``, ``rule:NAME``, ``nhi:NAME``.
    authority: str = ""
    #: Who asked for the session to end, if someone did (it then ends as ``interrupted``).
    terminated_by: str | None = None
    #: The recording's key in its store, as stored with the session (None: not recorded).
    key: str | None = None
    #: When the final extraction pass stored the command log; None while it has not (see
    #: :attr:`commands_final`).
    commands_extracted_at: datetime | None = None
    #: Finds the recording's local file (a remote store downloads it): asked on first use.
    locate: Callable[[], Path | None] = field(default=lambda: None, repr=False, compare=False)

    @cached_property
    def path(self) -> Path | None:
        """A readable local file of the recording, or None if it is missing.

        Raises RecordingUnavailable if the recording store cannot be reached.
        """
        return self.locate()

    @property
    def shown_status(self) -> str:
        """The status as people read it: an interrupted session someone ended is
        ``terminated``, not lost to a crash or a cut connection."""
        if self.status == "interrupted" and self.terminated_by:
            return "terminated"
        return self.status

    @property
    def break_glass(self) -> bool:
        """The session ran under an emergency grant: its review starts from this recording."""
        return self.authority.startswith("breakglass:")

    @property
    def commands_final(self) -> bool:
        """The command log is the final pass's, read from the whole sealed recording.

        Until then it holds what live passes found while the session ran: the
        session is live, its final pass has not run yet (it runs just after the
        session ends), or that pass failed (the gateway's log says why).
        """
        return self.commands_extracted_at is not None

    def commands_so_far_note(self) -> str | None:
        """Why this session's command log may be incomplete, for people (None: it is final)."""
        if self.commands_final:
            return None
        if self.status == "live":
            return "commands so far: the session is live"
        return (
            "commands so far: the final pass over the recording has not stored its log yet "
            "(it runs just after a session ends; if this stays, it failed: see the gateway's log)"
        )


@dataclass(frozen=True)
class CommandHit:
    """A command found by a search."""

    session_id: str
    user: str
    where: str
    at: datetime
    offset: float
    text: str


@dataclass(frozen=True)
class LoggedCommand:
    """One command of a session's command log."""

    seq: int
    #: Seconds from the start of the recording (where replay jumps to).
    offset: float
    at: datetime
    text: str
    #: Which witness found it (see recordings.commands): screen+keys, screen, keys, input, request.
    source: str = ""
    #: What the witnesses disagreed on, or why only one saw it.
    note: str = ""


class RecordingService:
    """Creates, seals, indexes and finds session recordings."""

    def __init__(self, config: GatewayConfig, store: Store, audit: AuditLog) -> None:
        self._storage: RecordingStore = open_recording_store(
            config.recordings, config.recordings_dir
        )
        #: Where recordings go, as the config says it (for a status that cannot reach it).
        self._storage_where = config.recordings.url or f"folder {config.recordings_dir}"
        self._compression = config.recordings.compression
        self.exec_payload_cap = config.recordings.exec_payload_cap_bytes
        self._store = store
        self._audit = audit
        self._flusher: Flusher | None = None
        self._flusher_lock = threading.Lock()
        #: Extractors of live sessions, kept between live passes (in the indexing worker).
        self._live_extractions: dict[str, _LiveExtraction] = {}

    # -- recording ------------------------------------------------------------

    def start(
        self,
        session_id: str,
        *,
        width: int,
        height: int,
        term: str | None,
        metadata: dict[str, Any],
    ) -> RecordingWriter:
        """Create the recording file for a session. Raises RecordingUnavailable."""
        path = self._storage.new_path(session_id, datetime.now(UTC))
        flusher = self._flusher_started()
        try:
            writer = RecordingWriter(path, width=width, height=height, term=term, metadata=metadata)
        except RecordingError as exc:
            raise RecordingUnavailable(
                f"the session cannot be recorded ({exc}), so it is refused"
            ) from None
        try:
            self._storage.opened(writer)
        except OSError as exc:
            writer.close()
            path.unlink(missing_ok=True)
            logger.error("refusing session %s: the recording store failed: %s", session_id, exc)
            raise RecordingUnavailable(
                f"the session cannot be recorded (the recording store failed: {exc}), "
                "so it is refused"
            ) from None
        flusher.add(writer)
        return writer

    def relative(self, path: Path) -> str:
        """A recording's path as stored with its session (relative to the recordings folder)."""
        return self._storage.key(path)

    def discard(self, writer: RecordingWriter) -> None:
        """Drop the recording of a session that never started."""
        if self._flusher is not None:
            self._flusher.remove(writer)
        writer.close()
        self._storage.discarded(writer.path)
        writer.path.unlink(missing_ok=True)

    def seal(self, session_id: str, writer: RecordingWriter) -> SealedRecording | None:
        """Seal a finished recording; None if it could not be written completely.

        The caller stores the digest with the session (see SessionLedger.close).
        """
        if self._flusher is not None:
            self._flusher.remove(writer)
        self._storage.finishing(writer.path)
        try:
            sealed = writer.seal(self._compression)
            self._storage.sealed(sealed)
        except (RecordingError, OSError) as exc:
            logger.error("recording of session %s is incomplete: %s", session_id, exc)
            # The session's end event says why (a write error has said so already).
            writer.failed = writer.failed or f"recording storage failed: {exc}"
            return None
        return sealed

    def _flusher_started(self) -> Flusher:
        with self._flusher_lock:
            if self._flusher is None:
                self._flusher = Flusher()
            return self._flusher

    def stop(self) -> None:
        """Stop the flusher (after writing what is pending)."""
        if self._flusher is not None:
            self._flusher.stop()
            self._flusher = None
        self._storage.close()

    def storage_status(self) -> tuple[str, str]:
        """Where recordings go and the problem reaching it ('' when there is none)."""
        try:
            return self._storage.check(), ""
        except OSError as exc:
            return self._storage_where, str(exc)

    # -- commands ----------------------------------------------------------------

    def index_commands(self, session_id: str, *, live: bool = False) -> int:
        """Store a session's commands and audit each new one; returns how many are stored.

        The exec command, the input lines of a shell without a pty, or the
        commands extracted from a terminal session. Each command not stored
        before gets a ``command.executed`` event in the human trail, in the
        same transaction as its row, so a SIEM sees what was run without
        opening recordings.

        ``live``: the session is still running. Only the lines the extractor
        has finished are stored, reading on from where the last live pass of
        this session stopped (the worker keeps its extractor), so a live
        session's commands are searchable within seconds at the cost of its
        new output only. The final pass (``live=False``) reads the whole
        sealed recording and stores the definitive log.
        """
        info = self.info(session_id)
        if info.path is None:
            return 0
        header = read_header(info.path)
        started = datetime.fromtimestamp(int(header.get("timestamp", 0)), UTC)
        metadata = header.get("pamgate", {})
        if live:
            state = self._live_extractions.get(session_id)
            if state is None:
                if len(self._live_extractions) >= MAX_LIVE_EXTRACTIONS:
                    # Sessions whose final pass ran elsewhere (another node, a restart).
                    self._live_extractions.pop(next(iter(self._live_extractions)))
                state = self._live_extractions[session_id] = _LiveExtraction.start(
                    header, info.path
                )
            commands = state.read_on()
            return self._store_commands(info, started, commands, first_seq=state.stored + 1,
                                        replace=False, live_state=state)  # fmt: skip
        self._live_extractions.pop(session_id, None)
        if info.kind == "exec":
            command = metadata.get("command")
            commands = [Command(0.0, command, REQUEST)] if command else []
        elif metadata.get("pty") is False:
            commands = input_line_commands(iter_events(info.path))
        else:
            width, height = int(header.get("width", 80)), int(header.get("height", 24))
            commands = CommandExtractor(width, height).feed_all(iter_events(info.path))
        return self._store_commands(info, started, commands, first_seq=1, replace=True)

    def _store_commands(
        self,
        info: RecordingInfo,
        started: datetime,
        commands: list[Command],
        *,
        first_seq: int,
        replace: bool,
        live_state: _LiveExtraction | None = None,
    ) -> int:
        records: list[AuditRecord] = []
        with self._store.transaction() as db:
            stored = {
                row.seq: row.text
                for row in db.scalars(
                    select(SessionCommand).where(SessionCommand.session_id == info.session_id)
                )
            }
            if replace:
                db.execute(
                    delete(SessionCommand).where(SessionCommand.session_id == info.session_id)
                )
                # With the rows, so the log is never marked final without them, nor the
                # other way round.
                db.execute(
                    update(SessionRecord)
                    .where(SessionRecord.id == info.session_id)
                    .values(commands_extracted_at=datetime.now(UTC))
                )
            for seq, command in enumerate(commands, first_seq):
                at = datetime.fromtimestamp(started.timestamp() + command.time, UTC)
                if not replace and seq in stored:
                    continue
                db.add(
                    SessionCommand(
                        session_id=info.session_id, seq=seq, offset=command.time, at=at,
                        text=command.text, source=command.source, note=command.note,
                    )
                )  # fmt: skip
                if info.lane == "human" and stored.get(seq) != command.text:
                    records.append(
                        self._audit.append(db, Trail.HUMAN, _executed(info, seq, at, command))
                    )
            total = len(commands) + first_seq - 1 if commands or replace else len(stored)
        if live_state is not None:
            live_state.stored = total
        for record in records:
            self._audit.committed(record)
        return total

    def commands(self, session_id: str) -> list[LoggedCommand]:
        """A session's extracted commands, in order."""
        query = (
            select(SessionCommand)
            .where(SessionCommand.session_id == session_id)
            .order_by(SessionCommand.seq)
        )
        with self._store.transaction(write=False) as db:
            return [
                LoggedCommand(c.seq, c.offset, c.at, c.text, c.source, c.note)
                for c in db.scalars(query)
            ]

    def search(self, text: str, *, limit: int = 200) -> list[CommandHit]:
        """Commands containing ``text`` (case-insensitive), newest first."""
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._store.transaction(write=False) as db:
            rows = db.execute(
                select(SessionCommand, SessionRecord)
                .join(SessionRecord, SessionRecord.id == SessionCommand.session_id)
                .where(
                    # The note holds what the keystrokes said when the screen showed otherwise.
                    or_(
                        func.lower(SessionCommand.text).like(pattern.lower(), escape="\\"),
                        func.lower(SessionCommand.note).like(pattern.lower(), escape="\\"),
                    )
                )
                .order_by(SessionCommand.at.desc())
                .limit(limit)
            ).all()
        return [
            CommandHit(s.id, s.user, f"{s.account}@{s.target}", c.at, c.offset, c.text)
            for c, s in rows
        ]

    # -- lookup ------------------------------------------------------------------

    def list(
        self,
        *,
        user: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        authority: str | None = None,
        limit: int = 500,
    ) -> list[RecordingInfo]:
        """Recorded sessions, newest first: started at or after ``since`` and before
        ``until``; ``authority`` ending in ``:`` is a prefix (``breakglass:``), else exact."""
        query = select(SessionRecord).where(SessionRecord.recording_path.is_not(None))
        if user:
            query = query.where(SessionRecord.user == user)
        if target:
            query = query.where(SessionRecord.target == target)
        if since:
            query = query.where(SessionRecord.started_at >= since)
        if until:
            query = query.where(SessionRecord.started_at < until)
        if authority:
            query = query.where(
                SessionRecord.authority.startswith(authority, autoescape=True)
                if authority.endswith(":")
                else SessionRecord.authority == authority
            )
        with self._store.transaction(write=False) as db:
            rows = db.scalars(query.order_by(SessionRecord.started_at.desc()).limit(limit)).all()
        return [self._info(row) for row in rows]

    def info(self, session_ref: str) -> RecordingInfo:
        """The recorded session whose id is ``session_ref`` or starts with it (unique)."""
        if not session_ref or not all(c in "0123456789abcdef" for c in session_ref.lower()):
            raise UnknownSession(f"{session_ref!r} is not a session id")
        with self._store.transaction(write=False) as db:
            rows = db.scalars(
                select(SessionRecord)
                .where(SessionRecord.id.startswith(session_ref.lower()))
                .limit(2)
            ).all()
        if not rows:
            raise UnknownSession(f"no session {session_ref!r}")
        if len(rows) > 1:
            raise UnknownSession(f"{session_ref!r} matches several sessions: give more of the id")
        return self._info(rows[0])

    def verify(
        self, session_ref: str, *, actor: str | None = None
    ) -> tuple[RecordingInfo, str | None]:
        """Check a sealed recording against its stored sha256; (info, problem or None).

        A failed verification is audited (``recording.verify``, outcome failure)
        naming ``actor``, when one is given.
        """
        info = self.info(session_ref)
        problem = _problem(info)
        if problem is not None and actor is not None:
            self._refused(info, actor=actor, action="recording.verify", problem=problem)
        return info, problem

    def seal_interrupted(self, session_id: str, *, node: str) -> str | None:
        """Seal what an interrupted session's recording holds, as found; audited.

        A node that crashed never sealed its live sessions' recordings. The node
        that marks them interrupted (after its own restart, or taking over a dead
        node) records the sha256 of the bytes found (on disk, or what an object
        store received before the crash, made its final object), so
        ``recordings verify`` tells a crash from later tampering. Returns the
        digest, or None if there is nothing to seal (no file, already sealed, not
        interrupted).
        """
        info = self.info(session_id)
        if info.status != "interrupted" or info.sha256 is not None or info.key is None:
            return None
        try:
            # A remote store makes the final object from what was uploaded before the crash.
            path = self._storage.recover(info.key)
            if path is None:
                return None
            digest, size = file_sha256(path), path.stat().st_size
        except OSError as exc:
            logger.warning("cannot seal the recording of session %s: %s", session_id, exc)
            return None
        with self._store.transaction() as db:
            row = db.get(SessionRecord, session_id, with_for_update=True)
            if row is None or row.recording_sha256 is not None:
                return None
            row.recording_sha256 = digest
            record = self._audit.append(db, Trail.of_lane(row.lane), AuditEvent(
                actor=f"gateway:{node}", actor_type=ActorType.GATEWAY,
                action="recording.sealed", outcome="success", target=f"session:{session_id}",
                session_id=session_id, authority=row.authority,
                reason="sealed as found: the session was interrupted before its end",
                details={"sha256": digest, "bytes": size, "interrupted": True},
            ))  # fmt: skip
        self._audit.committed(record)
        return digest

    def open_for_review(self, session_ref: str, *, actor: str, purpose: str) -> RecordingInfo:
        """A recording an auditor is about to replay or export: checked and audited.

        A sealed recording must still match its sha256 (RecordingTampered
        otherwise). An unsealed one (the session was interrupted) is returned
        as written; the caller should say so. The access itself goes to the
        audit trail first, and does not happen if that fails; a refused access
        is audited too (``recording.<purpose>``, outcome failure, and why).
        """
        info = self.info(session_ref)
        problem = _problem(info)
        if info.path is None:
            self._refused(info, actor=actor, action=f"recording.{purpose}", problem=problem or "")
            raise UnknownSession(f"session {info.session_id} has no recording file")
        if problem and info.sha256 is not None:
            self._refused(
                info, actor=actor, action=f"recording.{purpose}",
                problem=f"fails verification: {problem}",
            )  # fmt: skip
            raise RecordingTampered(
                f"recording of session {info.session_id} fails verification: {problem}"
            )
        self._audit.record(
            Trail.of_lane(info.lane),
            AuditEvent(
                actor=actor,
                actor_type=ActorType.ADMIN,
                action=f"recording.{purpose}",
                target=f"session:{info.session_id}",
                session_id=info.session_id,
                authority=admin_authority(actor),
                details={"user": info.user, "sealed": info.sha256 is not None},
            ),
        )
        return info

    def _refused(self, info: RecordingInfo, *, actor: str, action: str, problem: str) -> None:
        """Audit a refused replay or export, or a failed verification, with its reason."""
        self._audit.record(
            Trail.of_lane(info.lane),
            AuditEvent(
                actor=actor,
                actor_type=ActorType.ADMIN,
                action=action,
                outcome="failure",
                reason=problem,
                target=f"session:{info.session_id}",
                session_id=info.session_id,
                authority=admin_authority(actor),
                details={"user": info.user, "sealed": info.sha256 is not None},
            ),
        )

    def export(self, session_ref: str, target: Path, *, actor: str) -> RecordingInfo:
        """Write a plain (uncompressed) asciicast v2 copy of a recording (mode 0600)."""
        info = self.open_for_review(session_ref, actor=actor, purpose="exported")
        assert info.path is not None
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        # It holds everything typed in the session: owner-only, like the original.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open_text(info.path) as source, os.fdopen(fd, "w", encoding="utf-8") as out:
            shutil.copyfileobj(source, out)
        temporary.rename(target)
        return info

    def export_to(self, session_ref: str, out: IO[str], *, actor: str) -> RecordingInfo:
        """Write a plain asciicast v2 copy of a recording to ``out`` (a pipe, stdout)."""
        info = self.open_for_review(session_ref, actor=actor, purpose="exported")
        assert info.path is not None
        with open_text(info.path) as source:
            shutil.copyfileobj(source, out)
        out.flush()
        return info

    def _info(self, row: SessionRecord) -> RecordingInfo:
        key = row.recording_path

        def locate() -> Path | None:
            if key is None:
                return None
            try:
                return self._storage.local_path(key)
            except OSError as exc:
                raise RecordingUnavailable(
                    f"the recording of session {row.id} cannot be read: {exc}"
                ) from None

        return RecordingInfo(
            session_id=row.id,
            lane=row.lane,
            user=row.user,
            target=row.target,
            account=row.account,
            kind=row.kind,
            status=row.status,
            started_at=row.started_at,
            ended_at=row.ended_at,
            sha256=row.recording_sha256,
            authority=row.authority,
            terminated_by=row.terminate_by,
            key=key,
            commands_extracted_at=row.commands_extracted_at,
            locate=locate,
        )


def _executed(info: RecordingInfo, seq: int, at: datetime, command: Command) -> AuditEvent:
    """The ``command.executed`` event of one logged command."""
    return AuditEvent(
        actor=info.user,
        actor_type=ActorType.HUMAN,
        action="command.executed",
        target=info.target,
        account=info.account,
        session_id=info.session_id,
        authority=info.authority,
        details={
            "seq": seq,
            "text": command.text,
            "source": command.source,
            "note": command.note,
            "at": at.isoformat(),
            "offset": round(command.time, 3),
        },
    )


class _LiveExtraction:
    """The command extraction of a live session, carried from one live pass to the next."""

    def __init__(self, path: Path, offset: int, extractor: CommandExtractor | None) -> None:
        self.path = path
        self.offset = offset
        #: None: not a terminal session (a shell without a pty is read from its input lines).
        self.extractor = extractor
        self.input_lines: list[Event] | None = None
        self.stored = 0

    @classmethod
    def start(cls, header: dict[str, Any], path: Path) -> _LiveExtraction:
        with open(path, "rb") as handle:
            offset = len(handle.readline())
        metadata = header.get("pamgate", {})
        if metadata.get("kind") != "shell" or not path.name.endswith(".cast"):
            return cls(path, offset, None)
        if metadata.get("pty") is False:
            extraction = cls(path, offset, None)
            extraction.input_lines = []
            return extraction
        width, height = int(header.get("width", 80)), int(header.get("height", 24))
        return cls(path, offset, CommandExtractor(width, height))

    def read_on(self) -> list[Command]:
        """The commands finished by what was written since the last pass."""
        if self.extractor is None and self.input_lines is None:
            return []
        found: list[Command] = []
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            for line in handle:
                if not line.endswith(b"\n"):
                    break  # still being written
                try:
                    event = decode_event(line)
                except TornLine:
                    break
                self.offset += len(line)
                if event is None:
                    continue
                if self.extractor is not None:
                    found += self.extractor.feed(event)
                elif self.input_lines is not None and event.code == "i":
                    self.input_lines.append(event)
        if self.input_lines is not None:
            # Input is capped like output, so the events kept here are bounded too.
            return input_line_commands(self.input_lines, complete=False)[self.stored :]
        return found


def _problem(info: RecordingInfo) -> str | None:
    """What is wrong with a recording's file against its seal (None: nothing)."""
    if info.path is None:
        return "the recording file is missing"
    if info.sha256 is None:
        return "the recording was never sealed (session interrupted?)"
    actual = file_sha256(info.path)
    if actual != info.sha256:
        return f"sha256 is {actual}, but {info.sha256} was sealed"
    return None
