"""Answers from the audit trails alone: which files moved, which way, how big, with what hash.

:func:`file_records` reads the ``file.*`` events of both trails (the human
lane's and the machine lane's) and keeps those matching a user (or NHI),
a target and a time window. ``file.opened`` events are left out by
default: the ``file.closed`` event that follows carries the same path with
the bytes, the sha256 and whether the whole file passed. Plain Python over
:class:`~gateway.domain.audit.trail.AuditLog`; no sockets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.domain.audit.trail import AuditLog, AuditRecord, Trail


@dataclass(frozen=True)
class FileRecord:
    """One file event, with the facts an auditor asks for pulled out of its details."""

    record: AuditRecord

    @property
    def details(self) -> dict[str, Any]:
        return json.loads(self.record.details)

    def row(self) -> dict[str, Any]:
        """The columns of ``pamgate audit files``, in order."""
        record, details = self.record, self.details
        return {
            "time": record.ts,
            "trail": record.trail,
            "user": record.actor,
            "target": record.target,
            "account": record.account,
            "action": record.action,
            "outcome": record.outcome,
            "tool": details.get("tool"),
            "direction": details.get("direction"),
            "path": details.get("path"),
            "new_path": details.get("new_path"),
            "bytes": details.get("bytes"),
            "sha256": details.get("sha256"),
            "complete": details.get("complete"),
            "authority": record.authority,
            "session": record.session_id,
            "reason": record.reason or None,
        }


def file_records(
    audit: AuditLog,
    *,
    user: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    include_opened: bool = False,
) -> Iterator[FileRecord]:
    """File events of both trails, oldest first within each trail, filtered as asked."""
    until_text = until.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if until else None
    for trail in Trail:
        for record in audit.events(trail, since=since):
            if not record.action.startswith("file."):
                continue
            if record.action == "file.opened" and not include_opened:
                continue
            if until_text is not None and record.ts >= until_text:
                break
            if user is not None and record.actor != user:
                continue
            if target is not None and record.target != target:
                continue
            yield FileRecord(record)
