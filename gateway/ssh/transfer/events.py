"""What an auditor says about a chunk of a transfer, and what it tallies for each file.

Each auditor call returns a :class:`Verdict`: the bytes to pass on, the
gateway's own replies to the client, notices for the client's stderr, the
audit events (:class:`FileEvent`) and, for hostile or over-cap streams, why
the channel must close. :class:`FileTally` keeps one file's bytes and, while
its bytes form one run from offset 0, its running sha256 (chunks that
arrive ahead of the run wait in a bounded buffer, :class:`ReorderBudget`).
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


#: Bytes one transfer channel may hold ahead of its files' runs (about 32 OpenSSH reads).
MAX_REORDER_BYTES = 8 * 1024 * 1024


class ReorderBudget:
    """How many bytes the files of one channel may still hold ahead of their runs."""

    def __init__(self, limit: int = MAX_REORDER_BYTES) -> None:
        self.left = limit


class FileTally:
    """What passed through for one file: bytes, and a running hash of its run from offset 0.

    Chunks are hashed in offset order: one that arrives ahead of the run
    (parallel reads answered out of order, a short read re-requested) waits
    in a buffer bounded by ``budget``. A chunk that overlaps what has
    passed, or that the budget cannot hold, ends the run: the file is then
    recorded with its byte count and no hash.
    """

    def __init__(
        self, path: str, direction: str, whole: bool, budget: ReorderBudget | None = None
    ) -> None:
        self.path = path
        self.direction = direction
        self.bytes = 0
        self.next_offset = 0
        self.sequential = True
        self._hash = hashlib.sha256()
        self._ahead: dict[int, bytes] = {}
        self._budget = budget or ReorderBudget()
        #: Whether the transfer can cover the whole file (uploads: truncated or new).
        self.whole = whole
        #: Downloads: the offset of a read answered EOF.
        self.eof_at: int | None = None
        #: Downloads: the file's size as the target told it (STAT, LSTAT or FSTAT).
        self.size: int | None = None
        self.failed = ""
        self.started = time.monotonic()

    def add(self, offset: int, data: bytes) -> None:
        self.bytes += len(data)
        if not data or not self.sequential:
            return
        if offset == self.next_offset:
            self._extend(data)
            while self.next_offset in self._ahead:
                held = self._ahead.pop(self.next_offset)
                self._budget.left += len(held)
                self._extend(held)
        elif (
            offset > self.next_offset
            and offset not in self._ahead
            and (self._budget.left >= len(data))
        ):
            self._ahead[offset] = data
            self._budget.left -= len(data)
        else:
            self._give_up()

    def _extend(self, data: bytes) -> None:
        self._hash.update(data)
        self.next_offset += len(data)

    def _give_up(self) -> None:
        self.sequential = False
        self._release()

    def _release(self) -> None:
        self._budget.left += sum(len(held) for held in self._ahead.values())
        self._ahead.clear()

    @property
    def complete(self) -> bool:
        """Whether the whole file passed, in one run from offset 0."""
        if not (self.whole and self.sequential) or self._ahead or self.failed:
            return False
        if self.direction == Direction.DOWNLOAD:
            return self.next_offset in (self.eof_at, self.size)
        return True

    def summary(self, **extra: Any) -> dict[str, Any]:
        complete = self.complete
        self._release()  # the file is done: what waits ahead goes back to the budget
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
