"""Per-file audit and policy for file transfers run as exec commands (``scp -O``, ``rsync``).

- :class:`ScpAuditor` parses the legacy ``scp -t/-f`` stream in its data
  direction (file names, sizes, contents);
- :class:`StreamAuditor` counts an ``rsync --server`` stream, whose protocol
  is not parsed: the audit names the command, its direction and the bytes.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.domain.transfer.policy import ExecTransfer, TransferPolicy
from gateway.ssh.transfer.events import FileEvent, FileTally, Verdict

#: Longest control line of the scp protocol accepted.
MAX_SCP_LINE = 8192


class ScpAuditor:
    """Follows the legacy scp protocol in the direction file contents flow.

    Control lines are ``C<mode> <size> <name>`` (a file of ``size`` bytes
    follows, then one status byte), ``D<mode> 0 <name>`` / ``E`` (enter and
    leave a directory), ``T...`` (times) and ``\\x01``/``\\x02`` (warnings
    and errors). A file bigger than the cap, or a line that is not scp,
    aborts the channel: the stream cannot be answered mid-way.
    """

    def __init__(self, policy: TransferPolicy, transfer: ExecTransfer) -> None:
        self._policy = policy
        self._exec = transfer
        self._line = bytearray()
        self._dirs: list[str] = []
        self._file: FileTally | None = None
        self._left = 0
        self._failed = False

    @property
    def tool(self) -> str:
        return "scp"

    def data(self, data: bytes) -> Verdict:
        """Follow a chunk of the data direction; the chunk passes unchanged unless aborted."""
        verdict = Verdict(forward=data)
        if self._failed:
            return Verdict()
        view = memoryview(data)
        while view:
            if self._file is not None:
                take = min(self._left, len(view))
                self._file.add(self._file.next_offset, bytes(view[:take]))
                self._left -= take
                view = view[take:]
                if self._left == 0:
                    verdict.events.append(
                        FileEvent("file.closed", "success", self._summary(self._file))
                    )
                    self._file = None
                continue
            if not self._line and view[0] == 0:
                view = view[1:]  # the status byte after a file
                continue
            end = bytes(view).find(b"\n")
            chunk = view if end < 0 else view[: end + 1]
            self._line += chunk
            view = view[len(chunk) :]
            if len(self._line) > MAX_SCP_LINE:
                return self._abort("an scp control line is too long", verdict)
            if end >= 0:
                problem = self._control(bytes(self._line[:-1]), verdict)
                self._line.clear()
                if problem:
                    return self._abort(problem, verdict)
        return verdict

    def _control(self, line: bytes, verdict: Verdict) -> str | None:
        if not line:
            return "an empty scp control line"
        kind, text = line[:1], line[1:].decode("utf-8", "backslashreplace")
        if kind in (b"\x01", b"\x02", b"T"):
            return None
        if kind == b"E":
            if self._dirs:
                self._dirs.pop()
            return None
        if kind not in (b"C", b"D"):
            return f"unexpected scp control line {line[:40]!r}"
        parts = text.split(" ", 2)
        if len(parts) != 3 or not parts[1].isdigit() or "/" in parts[2] or parts[2] in ("", ".."):
            return f"malformed scp control line {line[:80]!r}"
        if kind == b"D":
            self._dirs.append(parts[2])
            return None
        size = int(parts[1])
        path = "/".join([*self._dirs, parts[2]])
        details = {"tool": "scp", "path": path, "direction": self._exec.direction, "size": size,
                   "permissions": parts[0], "command_paths": list(self._exec.paths)}  # fmt: skip
        cap = self._policy.max_bytes
        if cap is not None and size > cap:
            message = f"pamgate: {path} is larger than the {cap}-byte cap of {self._policy.source}"
            verdict.events.append(FileEvent("file.refused", "refused", details, reason=message))
            return message
        verdict.events.append(FileEvent("file.opened", "success", details))
        self._file = FileTally(path, self._exec.direction, whole=True)
        self._file.ended = True
        self._left = size
        if size == 0:
            verdict.events.append(FileEvent("file.closed", "success", self._summary(self._file)))
            self._file = None
        return None

    def _summary(self, transfer: FileTally) -> dict[str, Any]:
        return transfer.summary(tool="scp")

    def _abort(self, message: str, verdict: Verdict) -> Verdict:
        self._failed = True
        if not message.startswith("pamgate:"):
            message = f"pamgate: {message}; channel closed"
            verdict.events.append(
                FileEvent("file.refused", "refused", {"tool": "scp", "operation": "protocol"},
                          reason=message)
            )  # fmt: skip
        verdict.forward = b""
        verdict.abort = message
        verdict.notices.append(message)
        return verdict

    def finish(self) -> list[FileEvent]:
        """A file cut off mid-way: audited as incomplete."""
        if self._file is None:
            return []
        transfer, self._file = self._file, None
        transfer.ended = False
        transfer.failed = f"the channel closed {self._left} bytes before the end of the file"
        return [FileEvent("file.closed", "interrupted", self._summary(transfer), transfer.failed)]


class StreamAuditor:
    """Counts an unparsed transfer stream (rsync) in its data direction, against the cap."""

    def __init__(self, policy: TransferPolicy, transfer: ExecTransfer, command: str) -> None:
        self._policy = policy
        self._exec = transfer
        self._command = command
        self._bytes = 0
        self._started = time.monotonic()
        self._opened = False
        self._failed = False

    @property
    def tool(self) -> str:
        return self._exec.tool

    def data(self, data: bytes) -> Verdict:
        """Count a chunk; past the cap, the channel is closed."""
        if self._failed:
            return Verdict()
        events = []
        if not self._opened:
            # The files are not parsed: the command is the record of what was asked.
            self._opened = True
            details = {**self._details(), "command": self._command[:500]}
            events.append(FileEvent("file.opened", "success", details))
        self._bytes += len(data)
        cap = self._policy.max_bytes
        if cap is not None and self._bytes > cap:
            self._failed = True
            message = (
                f"pamgate: {self.tool} stream larger than the {cap}-byte cap of "
                f"{self._policy.source}; channel closed"
            )
            events.append(FileEvent("file.refused", "refused", self._details(), reason=message))
            return Verdict(notices=[message], events=events, abort=message)
        return Verdict(forward=data, events=events)

    def _details(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "direction": self._exec.direction,
            "path": " ".join(self._exec.paths)[:500],
            "bytes": self._bytes,
            "seconds": round(time.monotonic() - self._started, 3),
            "sha256": None,
            # The rsync protocol is not parsed: completeness is the command's exit status.
            "complete": None,
        }

    def finish(self) -> list[FileEvent]:
        """The stream's total, once the channel has closed."""
        if not self._opened:
            return []
        return [FileEvent("file.closed", "success", self._details())]
