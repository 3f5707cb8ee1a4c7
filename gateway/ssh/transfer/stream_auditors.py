"""Per-file audit and policy for transfers run as exec commands (``scp -O``, ``rsync``, ``dd``).

Each auditor sees both directions of the channel (:meth:`from_client`,
:meth:`from_target`) and follows the one file contents flow in:

- :class:`ScpAuditor` parses the legacy ``scp -t/-f`` stream (file names,
  sizes, contents);
- :class:`StreamAuditor` counts a stream it does not parse: ``dd``'s
  (which is one file's content, so it is hashed too) and, through
  :class:`RsyncAuditor`, rsync's, whose ``-s`` arguments on the stream are
  read and held to the rule before rsync sees them.

Only bytes that are passed on are counted: the audit's byte counts are
what crossed the gateway.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.domain.transfer.commands import ExecTransfer, UnclearTransfer, with_stream_args
from gateway.domain.transfer.modes import Direction
from gateway.domain.transfer.policy import TransferPolicy
from gateway.ssh.transfer.events import FileEvent, FileTally, Verdict

#: Longest control line of the scp protocol accepted.
MAX_SCP_LINE = 8192
#: Most bytes of rsync -s arguments held back until they are read.
MAX_RSYNC_STREAM_ARGS = 1024 * 1024


class _OneWay:
    """An auditor of the direction file contents flow in; the other passes untouched."""

    def __init__(self, direction: Direction) -> None:
        self._uploads = direction == Direction.UPLOAD

    def from_client(self, data: bytes) -> Verdict:
        return self.data(data) if self._uploads else Verdict(forward=data)

    def from_target(self, data: bytes) -> Verdict:
        return Verdict(forward=data) if self._uploads else self.data(data)

    def data(self, data: bytes) -> Verdict:
        raise NotImplementedError


class ScpAuditor(_OneWay):
    """Follows the legacy scp protocol in the direction file contents flow.

    Control lines are ``C<mode> <size> <name>`` (a file of ``size`` bytes
    follows, then one status byte), ``D<mode> 0 <name>`` / ``E`` (enter and
    leave a directory), ``T...`` (times) and ``\\x01``/``\\x02`` (warnings
    and errors). A file bigger than the cap, or a line that is not scp,
    aborts the channel: the stream cannot be answered mid-way.
    """

    tool = "scp"

    def __init__(self, policy: TransferPolicy, transfer: ExecTransfer) -> None:
        assert transfer.direction is not None
        super().__init__(transfer.direction)
        self._policy = policy
        self._exec = transfer
        self._direction = transfer.direction
        self._line = bytearray()
        self._dirs: list[str] = []
        self._file: FileTally | None = None
        self._left = 0
        self._failed = False

    def data(self, data: bytes) -> Verdict:
        """Follow a chunk of the data direction; it passes unchanged up to any problem."""
        verdict = Verdict()
        if self._failed:
            return verdict
        view = memoryview(data)
        passed = 0  # bytes of ``data`` followed without a problem
        while passed < len(data):
            rest = view[passed:]
            if self._file is not None:
                take = min(self._left, len(rest))
                self._file.add(self._file.next_offset, bytes(rest[:take]))
                self._left -= take
                passed += take
                if self._left == 0:
                    verdict.events.append(FileEvent("file.closed", "success", self._summary()))
                    self._file = None
                continue
            if not self._line and rest[0] == 0:
                passed += 1  # the status byte after a file
                continue
            end = bytes(rest[: MAX_SCP_LINE + 1]).find(b"\n")
            chunk = rest if end < 0 else rest[: end + 1]
            self._line += chunk
            if len(self._line) > MAX_SCP_LINE:
                return self._abort("an scp control line is too long", verdict, data, passed)
            if end >= 0:
                line_start = passed - (len(self._line) - len(chunk))
                problem = self._control(bytes(self._line[:-1]), verdict)
                self._line.clear()
                if problem:
                    return self._abort(problem, verdict, data, max(line_start, 0))
            passed += len(chunk)
        verdict.forward = data
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
        details = {"tool": "scp", "path": path, "direction": self._direction, "size": size,
                   "permissions": parts[0], "command_paths": list(self._exec.paths)}  # fmt: skip
        cap = self._policy.max_bytes
        if cap is not None and size > cap:
            message = f"pamgate: {path} is larger than the {cap}-byte cap of {self._policy.source}"
            verdict.events.append(FileEvent("file.refused", "refused", details, reason=message))
            return message
        verdict.events.append(FileEvent("file.opened", "success", details))
        self._file = FileTally(path, self._direction, whole=True)
        self._file.size = self._file.eof_at = size  # complete once ``size`` bytes passed
        self._left = size
        if size == 0:
            verdict.events.append(FileEvent("file.closed", "success", self._summary()))
            self._file = None
        return None

    def _summary(self) -> dict[str, Any]:
        assert self._file is not None
        return self._file.summary(tool="scp")

    def _abort(self, message: str, verdict: Verdict, data: bytes, passed: int) -> Verdict:
        self._failed = True
        if not message.startswith("pamgate:"):
            message = f"pamgate: {message}; channel closed"
            verdict.events.append(
                FileEvent("file.refused", "refused", {"tool": "scp", "operation": "protocol"},
                          reason=message)
            )  # fmt: skip
        verdict.forward = data[:passed]  # what was followed (and counted) still goes
        verdict.abort = message
        verdict.notices.append(message)
        return verdict

    def finish(self, exit_status: int | None = None) -> list[FileEvent]:
        """A file cut off mid-way: audited as incomplete."""
        if self._file is None:
            return []
        transfer, self._file = self._file, None
        transfer.failed = f"the channel closed {self._left} bytes before the end of the file"
        return [FileEvent("file.closed", "interrupted", transfer.summary(tool="scp"),
                          transfer.failed)]  # fmt: skip


class StreamAuditor(_OneWay):
    """Counts a stream the gateway does not parse, in its data direction, against the cap.

    For ``dd`` the stream is the file's content: it is hashed, and complete
    when dd read or wrote all of it (only plain operands) and exited 0.
    """

    def __init__(self, policy: TransferPolicy, transfer: ExecTransfer, command: str) -> None:
        assert transfer.direction is not None
        super().__init__(transfer.direction)
        self._policy = policy
        self._exec = transfer
        self._command = command
        self._paths = transfer.paths
        self._tally = FileTally(" ".join(transfer.paths)[:500], transfer.direction,
                                whole=transfer.whole)  # fmt: skip
        self._started = time.monotonic()
        self._opened = False
        self._failed = False

    @property
    def tool(self) -> str:
        return self._exec.tool

    def data(self, data: bytes) -> Verdict:
        """Count a chunk; one that would cross the cap is not passed on, and the channel closes."""
        if self._failed:
            return Verdict()
        events = self._open()
        cap = self._policy.max_bytes
        if cap is not None and self._tally.bytes + len(data) > cap:
            self._failed = True
            self._tally.failed = "size cap"
            message = (
                f"pamgate: {self.tool} stream larger than the {cap}-byte cap of "
                f"{self._policy.source}; channel closed"
            )
            events.append(FileEvent("file.refused", "refused", self._details(), reason=message))
            return Verdict(notices=[message], events=events, abort=message)
        self._tally.add(self._tally.next_offset, data)
        return Verdict(forward=data, events=events)

    def _open(self) -> list[FileEvent]:
        """The ``file.opened`` event, once: the files are not parsed, so the command is the
        record of what was asked."""
        if self._opened:
            return []
        self._opened = True
        details = {**self._details(), "command": self._command[:500]}
        return [FileEvent("file.opened", "success", details)]

    def _details(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "direction": self._exec.direction,
            "path": " ".join(self._paths)[:500],
            "bytes": self._tally.bytes,
            "seconds": round(time.monotonic() - self._started, 3),
            "sha256": None,
            # Not parsed: whether it all went through is the command's exit status.
            "complete": None,
        }

    def finish(self, exit_status: int | None = None) -> list[FileEvent]:
        """The stream's total once the channel has closed, with the command's exit status
        (an empty stream too: ``dd of=FILE count=0`` writes an empty file)."""
        events = self._open()
        details = {**self._details(), "exit_status": exit_status}
        if self.tool == "dd":
            tally = self._tally
            if exit_status is None:
                tally.failed = tally.failed or "the channel closed before dd exited"
            elif exit_status != 0:
                tally.failed = tally.failed or f"dd exited with status {exit_status}"
            tally.eof_at = tally.next_offset  # dd copied to the end (if it exited 0)
            summary = tally.summary()
            details.update(sha256=summary["sha256"], complete=summary["complete"])
        else:
            details["complete"] = exit_status == 0 and not self._tally.failed
        outcome = "success" if exit_status is not None else "interrupted"
        return [*events, FileEvent("file.closed", outcome, details)]


class RsyncAuditor(StreamAuditor):
    """An rsync server's stream; with ``-s``, its arguments on the stream are read first.

    rsync ``-s`` sends most of its arguments over the channel (NUL-ended
    strings, then an empty one) before the protocol starts: they are held
    back until complete, read as if they were on the command line, and held
    to the rule. A stream that contradicts the command line, or that the
    rule refuses, closes the channel before rsync reads a byte of it.
    """

    def __init__(self, policy: TransferPolicy, transfer: ExecTransfer, command: str) -> None:
        super().__init__(policy, transfer, command)
        self._held: bytearray | None = bytearray() if transfer.protected_args else None

    def from_client(self, data: bytes) -> Verdict:
        if self._held is None:
            return super().from_client(data)
        self._held += data
        end = self._held.find(b"\0\0")
        if end < 0:
            if len(self._held) > MAX_RSYNC_STREAM_ARGS:
                return self._refuse("its arguments on the stream are too long")
            return Verdict()
        args = [arg.decode("utf-8", "surrogateescape") for arg in self._held[:end].split(b"\0")]
        found = with_stream_args(self._exec, args)
        if isinstance(found, UnclearTransfer):
            return self._refuse(f"its arguments on the stream are unclear: {found.reason}")
        if found is None or found.direction != self._exec.direction:
            return self._refuse("its arguments on the stream contradict its command line")
        refusal = self._policy.exec_refusal(found)
        if refusal is not None:
            return self._refuse(refusal, told=True)
        self._paths = found.paths
        held, self._held = bytes(self._held), None
        return super().from_client(held)

    def _refuse(self, why: str, *, told: bool = False) -> Verdict:
        """Close the channel; ``told``: ``why`` is already a whole message (the rule's)."""
        self._failed = True
        self._held = None
        message = f"{why if told else 'pamgate: rsync refused: ' + why}; channel closed"
        details = {"tool": "rsync", "operation": "arguments", "command": self._command[:500]}
        event = FileEvent("file.refused", "refused", details, reason=message)
        return Verdict(notices=[message], events=[event], abort=message)
