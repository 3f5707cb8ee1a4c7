"""What an auditor says about a chunk of a transfer, and what it tallies for each file.

Each auditor call returns a :class:`Verdict`: the bytes to pass on, the
gateway's own replies to the client, notices for the client's stderr, the
audit events (:class:`FileEvent`) and, for hostile or over-cap streams, why
the channel must close. :class:`FileTally` keeps one file's bytes and, while
the transfer is sequential from offset 0, its running sha256.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from gateway.domain.transfer.policy import Direction


@dataclass(frozen=True)
class FileEvent:
    """One audit event about a file; the session adds who, where and under what authority."""

    action: str
    outcome: str
    details: dict[str, Any]
    reason: str = ""


@dataclass
class Verdict:
    """What to do with one chunk of a transfer stream."""

    forward: bytes = b""
    #: The gateway's own replies, for the client (SFTP: whole packets).
    reply: bytes = b""
    notices: list[str] = field(default_factory=list)
    events: list[FileEvent] = field(default_factory=list)
    #: Set when the channel must be closed (hostile stream, cap on an unparsed stream).
    abort: str | None = None


class FileTally:
    """What passed through for one file: bytes, and a running hash while sequential from 0."""

    def __init__(self, path: str, direction: str, whole: bool) -> None:
        self.path = path
        self.direction = direction
        self.bytes = 0
        self.next_offset = 0
        self.sequential = True
        self._hash = hashlib.sha256()
        #: Whether the transfer can cover the whole file (uploads: truncated or new).
        self.whole = whole
        self.ended = False  # downloads: EOF read at the end of the sequential run
        self.failed = ""
        self.started = time.monotonic()

    def add(self, offset: int, data: bytes) -> None:
        self.bytes += len(data)
        if offset == self.next_offset and self.sequential:
            self._hash.update(data)
            self.next_offset += len(data)
        elif data:
            self.sequential = False

    @property
    def complete(self) -> bool:
        done = self.ended if self.direction == Direction.DOWNLOAD else True
        return self.whole and self.sequential and done and not self.failed

    def summary(self, **extra: Any) -> dict[str, Any]:
        complete = self.complete
        details = {
            "path": self.path,
            "direction": self.direction,
            "bytes": self.bytes,
            "sha256": self._hash.hexdigest() if complete else None,
            "complete": complete,
            "seconds": round(time.monotonic() - self.started, 3),
        }
        if self.failed:
            details["problem"] = self.failed
        details.update(extra)
        return details
