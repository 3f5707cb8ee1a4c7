"""Operator actions on the evidence: session recordings and their command logs, the
audit trails, their signed checkpoints, and the file-transfer report. Reading any of
it needs the auditor or admin role; opening a recording (replay, export) is itself
audited, naming the operator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO

from gateway.domain.audit.checkpoints import Checkpoint
from gateway.domain.audit.trail import AuditLog, AuditRecord, Trail, VerifyResult
from gateway.domain.operators.core import OperatorCore
from gateway.domain.operators.roles import READ_TRAILS
from gateway.domain.recordings.service import CommandHit, LoggedCommand, RecordingInfo
from gateway.domain.transfer.report import FileRecord, file_records


class EvidenceActions(OperatorCore):
    """Recordings, audit trails and checkpoints (see :class:`OperatorCore`)."""

    # -- recordings ------------------------------------------------------------------------

    def recordings(
        self, *, user: str | None, target: str | None, since: datetime | None, limit: int,
        until: datetime | None = None, authority: str | None = None,
    ) -> list[RecordingInfo]:  # fmt: skip
        """Recorded sessions, newest first (``until``: started before it; ``authority``: a
        ``grant:``/``breakglass:``/``rule:`` prefix or a whole one). Auditor or admin."""
        self.require(READ_TRAILS, "see recordings")
        return self._services.recordings.list(
            user=user, target=target, since=since, until=until, authority=authority, limit=limit
        )

    def recording(self, session_ref: str) -> RecordingInfo:
        """The recorded session ``session_ref`` names (an id or a unique prefix of one).
        Auditor or admin."""
        self.require(READ_TRAILS, "see recordings")
        return self._services.recordings.info(session_ref)

    def search_commands(self, text: str) -> list[CommandHit]:
        """Commands containing ``text``, from every session's command log. Auditor or admin."""
        self.require(READ_TRAILS, "search recordings")
        return self._services.recordings.search(text)

    def commands(self, session_id: str) -> list[LoggedCommand]:
        """The commands extracted from a session, in order. Auditor or admin."""
        self.require(READ_TRAILS, "see a session's commands")
        return self._services.recordings.commands(session_id)

    def verify_recording(self, session_ref: str) -> tuple[RecordingInfo, str | None]:
        """A recording checked against its sealed sha256: (info, problem or None); a
        failed verification is audited, naming the operator. Auditor or admin."""
        # A read: a refused one is not audited (as for every read), a failed one is.
        operator = self.require(READ_TRAILS, "verify recordings")
        actor = self._actor(operator.name, authority=operator.authority(READ_TRAILS))
        return self._services.recordings.verify(session_ref, actor=actor)

    def open_recording(self, session_ref: str, *, purpose: str) -> RecordingInfo:
        """A recording to replay or watch, checked against its seal; audited
        (``recording.<purpose>``). Auditor or admin."""
        actor = self._acting(READ_TRAILS, "replay recordings")
        return self._services.recordings.open_for_review(session_ref, actor=actor, purpose=purpose)

    def export_recording(self, session_ref: str, target: Path) -> RecordingInfo:
        """Write a plain asciicast v2 copy of a recording to the file ``target``; audited
        (``recording.exported``). Auditor or admin."""
        actor = self._acting(READ_TRAILS, "export recordings")
        return self._services.recordings.export(session_ref, target, actor=actor)

    def export_recording_to(self, session_ref: str, out: IO[str]) -> RecordingInfo:
        """Write a plain asciicast v2 copy of a recording to ``out``; audited like
        :meth:`export_recording`. Auditor or admin."""
        actor = self._acting(READ_TRAILS, "export recordings")
        return self._services.recordings.export_to(session_ref, out, actor=actor)

    # -- the audit trails ----------------------------------------------------------------------

    def audit_reader(self) -> AuditReader:
        """Read access to the audit trails; each read checks the role again. Auditor or admin."""
        self.require(READ_TRAILS, "read the audit trails")
        return AuditReader(self, self._services.audit)

    def verify_trail(
        self, trail: Trail, *, progress: Callable[[int], None] | None = None
    ) -> VerifyResult:
        """Walk a trail's hash chain; the first event that breaks it. Auditor or admin."""
        self.require(READ_TRAILS, "verify the audit trails")
        return self._services.audit.verify(trail, progress=progress)

    def file_transfers(
        self,
        *,
        user: str | None,
        target: str | None,
        since: datetime | None,
        until: datetime | None,
        include_opened: bool,
    ) -> Iterator[FileRecord]:
        """File transfers and file changes of both trails, filtered as asked. Auditor or admin."""
        self.require(READ_TRAILS, "read the audit trails")
        return file_records(
            self._services.audit, user=user, target=target, since=since, until=until,
            include_opened=include_opened,
        )  # fmt: skip

    # -- checkpoints -------------------------------------------------------------------------------

    def read_checkpoints(self, path: Path | None = None) -> list[Checkpoint]:
        """The signed checkpoints in ``path`` (default: the gateway's own file) and every
        node's in the database. Auditor or admin."""
        self.require(READ_TRAILS, "read the audit checkpoints")
        return self._services.checkpoints.read(path)

    def parse_checkpoints(self, text: str, source: str) -> list[Checkpoint]:
        """Signed checkpoints from a copy of a checkpoint file (``source`` names it in
        errors), and every node's in the database. Auditor or admin."""
        self.require(READ_TRAILS, "read the audit checkpoints")
        book = self._services.checkpoints
        return book.with_stored(book.parse(text, source))

    def checkpoint_problem(self, trail: Trail, checkpoints: list[Checkpoint]) -> str | None:
        """How the trail contradicts a checkpoint, or None if it agrees. Auditor or admin."""
        self.require(READ_TRAILS, "verify the audit trails")
        return self._services.checkpoints.problems(trail, checkpoints)

    def sign_checkpoints(self) -> tuple[list[Checkpoint], Path]:
        """Sign both trails' head hashes into the gateway's checkpoint file; what was signed,
        and the file. Auditor or admin: it vouches for the trails as they are, and changes
        no access."""
        self.require(READ_TRAILS, "sign audit checkpoints")
        checkpoints = self._services.checkpoints
        return checkpoints.checkpoint(), checkpoints.path


class AuditReader:
    """The audit trails, read-only, for an operator who may read them."""

    def __init__(self, actions: OperatorCore, audit: AuditLog) -> None:
        self._actions = actions
        self._audit = audit

    def head(self, trail: Trail) -> tuple[int, str]:
        """The trail's newest sequence number and hash."""
        self._actions.require(READ_TRAILS, "read the audit trails")
        return self._audit.head(trail)

    def events(
        self,
        trail: Trail,
        *,
        after_seq: int = 0,
        until_seq: int | None = None,
        since: datetime | None = None,
    ) -> Iterator[AuditRecord]:
        """The trail's events after ``after_seq`` up to ``until_seq`` (from ``since``),
        oldest first."""
        self._actions.require(READ_TRAILS, "read the audit trails")
        return self._audit.events(trail, after_seq=after_seq, until_seq=until_seq, since=since)

    def tail(self, trail: Trail, count: int) -> list[AuditRecord]:
        """The trail's newest ``count`` events, oldest first."""
        self._actions.require(READ_TRAILS, "read the audit trails")
        return self._audit.tail(trail, count)
