"""Session recordings as the gateway uses them: where they live, sealing, commands, lookup.

The file format, extraction and playback are in :mod:`recordings`; this
module decides paths (``RECORDINGS/YYYY/MM/DD/<session>.cast``), keeps the
one flusher thread, stores each sealed recording's sha256 with its session,
extracts commands after the session (off the relay entirely) and answers the
CLI's and console's questions (list, search, verify, export).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select

from gateway.config import GatewayConfig
from gateway.errors import PamgateError
from gateway.models import SessionCommand, SessionRecord
from gateway.store import Store
from recordings.asciicast import (
    Flusher,
    RecordingError,
    RecordingWriter,
    SealedRecording,
    file_sha256,
    iter_events,
    open_text,
    read_header,
)
from recordings.commands import CommandExtractor

logger = logging.getLogger("pamgate.recordings")


class RecordingUnavailable(PamgateError):
    """A session cannot be recorded, so it must not happen."""


class UnknownSession(PamgateError):
    """No session (or no recording) matches what was asked for."""


@dataclass(frozen=True)
class RecordingInfo:
    """A recorded session, for listings."""

    session_id: str
    user: str
    target: str
    account: str
    kind: str
    status: str
    started_at: datetime
    ended_at: datetime | None
    path: Path | None
    sha256: str | None


@dataclass(frozen=True)
class CommandHit:
    """A command found by a search."""

    session_id: str
    user: str
    target: str
    at: datetime
    offset: float
    text: str


class RecordingService:
    """Creates, seals, indexes and finds session recordings."""

    def __init__(self, config: GatewayConfig, store: Store) -> None:
        self._root = config.recordings_dir
        self._compression = config.recordings.compression
        self.exec_payload_cap = config.recordings.exec_payload_cap_bytes
        self._store = store
        self._flusher: Flusher | None = None
        self._flusher_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Flush recordings on this event loop (the gateway's) rather than a thread."""
        self._loop = loop

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
        day = datetime.now(UTC)
        path = self._root / f"{day:%Y/%m/%d}" / f"{session_id}.cast"
        try:
            writer = RecordingWriter(path, width=width, height=height, term=term, metadata=metadata)
        except RecordingError as exc:
            raise RecordingUnavailable(
                f"the session cannot be recorded ({exc}), so it is refused"
            ) from None
        self._flusher_started().add(writer)
        return writer

    def relative(self, path: Path) -> str:
        """A recording's path as stored with its session (relative to the recordings folder)."""
        return str(path.relative_to(self._root))

    def discard(self, writer: RecordingWriter) -> None:
        """Drop the recording of a session that never started."""
        if self._flusher is not None:
            self._flusher.remove(writer)
        writer.close()
        writer.path.unlink(missing_ok=True)

    def seal(self, session_id: str, writer: RecordingWriter) -> SealedRecording | None:
        """Seal a finished recording; None if it could not be written completely.

        The caller stores the digest with the session (see SessionLedger.close).
        """
        if self._flusher is not None:
            self._flusher.remove(writer)
        try:
            return writer.seal(self._compression)
        except RecordingError as exc:
            logger.error("recording of session %s is incomplete: %s", session_id, exc)
            return None

    def _flusher_started(self) -> Flusher:
        with self._flusher_lock:
            if self._flusher is None:
                self._flusher = Flusher(loop=self._loop)
            return self._flusher

    def stop(self) -> None:
        """Stop the flusher thread (after writing what is pending)."""
        if self._flusher is not None:
            self._flusher.stop()
            self._flusher = None

    # -- commands ----------------------------------------------------------------

    def index_commands(self, session_id: str) -> int:
        """Extract a recorded shell session's commands into the store; returns how many."""
        info = self.info(session_id)
        if info.path is None or info.kind != "shell":
            return 0
        header = read_header(info.path)
        extractor = CommandExtractor(int(header.get("width", 80)), int(header.get("height", 24)))
        commands = extractor.feed_all(iter_events(info.path))
        started = datetime.fromtimestamp(int(header.get("timestamp", 0)), UTC)
        with self._store.transaction() as db:
            db.execute(delete(SessionCommand).where(SessionCommand.session_id == session_id))
            for seq, command in enumerate(commands, 1):
                db.add(
                    SessionCommand(
                        session_id=session_id,
                        seq=seq,
                        offset=command.time,
                        at=datetime.fromtimestamp(started.timestamp() + command.time, UTC),
                        text=command.text,
                    )
                )
        return len(commands)

    def commands(self, session_id: str) -> list[SessionCommand]:
        """A session's extracted commands, in order."""
        with self._store.transaction(write=False) as db:
            return list(
                db.scalars(
                    select(SessionCommand)
                    .where(SessionCommand.session_id == session_id)
                    .order_by(SessionCommand.seq)
                )
            )

    def search(self, text: str, *, limit: int = 200) -> list[CommandHit]:
        """Commands containing ``text`` (case-insensitive), newest first."""
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._store.transaction(write=False) as db:
            rows = db.execute(
                select(SessionCommand, SessionRecord)
                .join(SessionRecord, SessionRecord.id == SessionCommand.session_id)
                .where(func.lower(SessionCommand.text).like(pattern.lower(), escape="\\"))
                .order_by(SessionCommand.at.desc())
                .limit(limit)
            ).all()
        return [CommandHit(s.id, s.user, s.target, c.at, c.offset, c.text) for c, s in rows]

    # -- lookup ------------------------------------------------------------------

    def list(
        self,
        *,
        user: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        limit: int = 500,
    ) -> list[RecordingInfo]:
        """Recorded sessions, newest first."""
        query = select(SessionRecord).where(SessionRecord.recording_path.is_not(None))
        if user:
            query = query.where(SessionRecord.user == user)
        if target:
            query = query.where(SessionRecord.target == target)
        if since:
            query = query.where(SessionRecord.started_at >= since)
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

    def verify(self, session_ref: str) -> tuple[RecordingInfo, str | None]:
        """Check a sealed recording against its stored sha256; (info, problem or None)."""
        info = self.info(session_ref)
        if info.path is None:
            return info, "the recording file is missing"
        if info.sha256 is None:
            return info, "the recording was never sealed (session interrupted?)"
        actual = file_sha256(info.path)
        if actual != info.sha256:
            return info, f"sha256 is {actual}, but {info.sha256} was sealed"
        return info, None

    def export(self, session_ref: str, target: Path) -> RecordingInfo:
        """Write a plain (uncompressed) asciicast v2 copy of a recording."""
        info = self.info(session_ref)
        if info.path is None:
            raise UnknownSession(f"session {info.session_id} has no recording file")
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with open_text(info.path) as source, open(temporary, "w", encoding="utf-8") as out:
            shutil.copyfileobj(source, out)
        temporary.rename(target)
        return info

    def _info(self, row: SessionRecord) -> RecordingInfo:
        path = None
        if row.recording_path:
            candidate = self._root / row.recording_path
            path = candidate if candidate.exists() else None
        return RecordingInfo(
            session_id=row.id,
            user=row.user,
            target=row.target,
            account=row.account,
            kind=row.kind,
            status=row.status,
            started_at=row.started_at,
            ended_at=row.ended_at,
            path=path,
            sha256=row.recording_sha256,
        )
