"""The tap between a relayed session and its recording.

Pty sessions are recorded whole: output, keystrokes and resizes. Sessions
without a pty (exec, ``ssh -T`` shells, subsystems) keep the first ``cap``
bytes of stdout, of stderr (both as output events) and of stdin (as input
events), while byte counts and sha256 digests cover every byte: an auditor
needs to know what a 10 GB ``pg_dump`` or ``bash -s < script`` was, not to
have it twice.
"""

from __future__ import annotations

import hashlib
from typing import Any

from recordings.asciicast import RecordingWriter

STREAMS = ("stdout", "stderr", "stdin")


class SessionTap:
    """Feeds one session's traffic to its recording writer."""

    def __init__(self, writer: RecordingWriter, *, exec_payload_cap: int | None) -> None:
        """``exec_payload_cap`` is None for a pty session (record everything)."""
        self.writer = writer
        self._cap = exec_payload_cap
        self._digests = {name: hashlib.sha256() for name in STREAMS}
        self._counts = dict.fromkeys(STREAMS, 0)

    @property
    def is_exec(self) -> bool:
        return self._cap is not None

    def from_target(self, data: bytes, *, stderr: bool) -> None:
        """Output from the target, on stdout or stderr."""
        if self._cap is None:
            self.writer.output(data)
            return
        kept = self._count("stderr" if stderr else "stdout", data, self._cap)
        if kept:
            self.writer.output(kept)

    def from_client(self, data: bytes) -> None:
        """Keystrokes from the user, or stdin without a pty (capped like output)."""
        if self._cap is None:
            self.writer.input(data)
            return
        kept = self._count("stdin", data, self._cap)
        if kept:
            self.writer.input(kept)

    def _count(self, stream: str, data: bytes, cap: int) -> bytes:
        """Count and digest ``data`` on ``stream``; return the part within the cap."""
        self._digests[stream].update(data)
        kept = self._counts[stream]
        self._counts[stream] = kept + len(data)
        return data[: max(cap - kept, 0)]

    def resize(self, width: int, height: int) -> None:
        self.writer.resize(width, height)

    def summary(self) -> dict[str, Any]:
        """Stream facts for the session's end event (exec sessions)."""
        if self._cap is None:
            return {}
        facts: dict[str, Any] = {"payload_cap_bytes": self._cap}
        for stream in STREAMS:
            facts[f"{stream}_bytes"] = self._counts[stream]
            facts[f"{stream}_sha256"] = self._digests[stream].hexdigest()
            facts[f"{stream}_truncated"] = self._counts[stream] > self._cap
        return facts
