"""The tap between a relayed session and its recording.

Pty sessions are recorded whole: output, keystrokes and resizes. Exec
sessions keep the first ``cap`` bytes of stdout and of stderr (both as
output events) while byte counts and sha256 digests cover every byte: an
auditor needs to know what a 10 GB ``pg_dump`` was, not to have it twice.
"""

from __future__ import annotations

import hashlib
from typing import Any

from recordings.asciicast import RecordingWriter


class SessionTap:
    """Feeds one session's traffic to its recording writer."""

    def __init__(self, writer: RecordingWriter, *, exec_payload_cap: int | None) -> None:
        """``exec_payload_cap`` is None for a pty session (record everything)."""
        self.writer = writer
        self._cap = exec_payload_cap
        self._digests = {"stdout": hashlib.sha256(), "stderr": hashlib.sha256()}
        self._counts = {"stdout": 0, "stderr": 0}

    @property
    def is_exec(self) -> bool:
        return self._cap is not None

    def from_target(self, data: bytes, *, stderr: bool) -> None:
        """Output from the target, on stdout or stderr."""
        if self._cap is None:
            self.writer.output(data)
            return
        stream = "stderr" if stderr else "stdout"
        self._digests[stream].update(data)
        kept = self._counts[stream]
        self._counts[stream] = kept + len(data)
        if kept < self._cap:
            self.writer.output(data[: self._cap - kept])

    def from_client(self, data: bytes) -> None:
        """Keystrokes from the user (pty sessions only; exec stdin is counted, not kept)."""
        if self._cap is None:
            self.writer.input(data)

    def resize(self, width: int, height: int) -> None:
        self.writer.resize(width, height)

    def summary(self) -> dict[str, Any]:
        """Stream facts for the session's end event (exec sessions)."""
        if self._cap is None:
            return {}
        facts: dict[str, Any] = {"payload_cap_bytes": self._cap}
        for stream in ("stdout", "stderr"):
            facts[f"{stream}_bytes"] = self._counts[stream]
            facts[f"{stream}_sha256"] = self._digests[stream].hexdigest()
            facts[f"{stream}_truncated"] = self._counts[stream] > self._cap
        return facts
