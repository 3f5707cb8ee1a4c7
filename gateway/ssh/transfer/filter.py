"""The relay hook that puts a file transfer through its auditor and records what it says.

:func:`transfer_filter_for` looks at what a session asked for (the SFTP
subsystem, or an exec command, read by
:func:`~gateway.domain.transfer.commands.classify_exec`) and, under the
session's :class:`~gateway.domain.transfer.policy.TransferPolicy`, either
refuses it (audited as ``file.refused``) or returns a :class:`TransferFilter`
for the relay. Other sessions get no filter.

:class:`TransferFilter` is a :class:`~gateway.ssh.pipe.PayloadFilter`: each
chunk, both ways, goes through the auditor of
:mod:`gateway.ssh.transfer.sftp_auditor` or
:mod:`gateway.ssh.transfer.stream_auditors`; the gateway's own SFTP replies
go to the client, notices to the client's stderr, and audit events to the
lane's trail in order. If an event cannot be written, or the auditor says
the stream is hostile or over its cap, the session ends (fail closed).
When the session ends, :meth:`TransferFilter.finished` writes the last
events before the relay records the session's end.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass
from typing import Protocol

from gateway.domain.transfer.commands import ExecTransfer, Found, classify_exec
from gateway.domain.transfer.policy import TransferPolicy
from gateway.errors import PamgateError
from gateway.ssh.channel import SessionRequest
from gateway.ssh.relay import RelayedSession
from gateway.ssh.transfer.events import FileEvent, Verdict
from gateway.ssh.transfer.sftp_auditor import SftpAuditor
from gateway.ssh.transfer.sftp_paths import SftpPathGuard
from gateway.ssh.transfer.stream_auditors import RsyncAuditor, ScpAuditor, StreamAuditor

logger = logging.getLogger("pamgate.transfer")


class TransferRefused(PamgateError):
    """The session's policy does not allow this file transfer."""


@dataclass(frozen=True)
class TransferScope:
    """Where a session's file events point: the authority, target and account behind it."""

    authority: str
    target: str
    account: str


class Auditor(Protocol):
    """What every auditor offers: both directions of a channel, and its end."""

    @property
    def tool(self) -> str: ...

    def from_client(self, data: bytes) -> Verdict: ...

    def from_target(self, data: bytes) -> Verdict: ...

    def finish(self, exit_status: int | None = None) -> list[FileEvent]: ...


class TransferFilter:
    """Runs a session's payload through an auditor; see the module docstring."""

    def __init__(self, auditor: Auditor, session: RelayedSession, scope: TransferScope) -> None:
        self._auditor = auditor
        self._session = session
        self._scope = scope
        self._events: collections.deque[FileEvent] = collections.deque()
        self._writer: asyncio.Task[None] | None = None
        self._done = False

    def to_target(self, data: bytes) -> bytes:
        return b"" if self._done else self.apply(self._auditor.from_client(data))

    def to_client(self, data: bytes) -> bytes:
        return b"" if self._done else self.apply(self._auditor.from_target(data))

    async def finished(self, exit_status: int | None) -> None:
        """Audit what the channel left open, and wait until every event is written."""
        if not self._done:
            self._done = True  # nothing more passes: the session is over
            self._record(self._auditor.finish(exit_status))
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    def apply(self, verdict: Verdict) -> bytes:
        """Carry out a verdict (replies, notices, events, abort); the bytes to pass on."""
        channel = self._session.channel
        if verdict.reply:
            channel.write(verdict.reply)
        for notice in verdict.notices:
            if notice != verdict.abort:  # terminate() says that one
                channel.write_stderr((notice + "\r\n").encode())
        self._record(verdict.events)
        if verdict.abort:
            asyncio.get_running_loop().call_soon(self._session.terminate, verdict.abort)
        return verdict.forward

    def _record(self, events: list[FileEvent]) -> None:
        if not events:
            return
        self._events.extend(events)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_events())
            self._session.track(self._writer)

    async def _write_events(self) -> None:
        """Write queued events one at a time, in order; a failure ends the session."""
        while self._events:
            event = self._events.popleft()
            if not await record_file_event(self._session, self._scope, event):
                self._events.clear()
                self._session.terminate(
                    "the file transfer could not be audited, so the session was ended"
                )
                return


async def record_file_event(
    session: RelayedSession, scope: TransferScope, event: FileEvent
) -> bool:
    """Append a file event to the session's trail; False if that failed."""
    return await session.record(session.event(
        event.action, event.outcome, reason=event.reason, target=scope.target,
        account=scope.account, session_id=session.session_id, authority=scope.authority,
        **event.details,
    ))  # fmt: skip


async def transfer_filter_for(
    request: SessionRequest,
    policy: TransferPolicy,
    session: RelayedSession,
    scope: TransferScope,
) -> TransferFilter | SftpPathGuard | None:
    """The filter for the SFTP subsystem or a transfer server started by exec; None otherwise.

    Raises TransferRefused (after auditing it) when the policy refuses it.
    """
    found: Found
    if request.subsystem == "sftp":
        found = ExecTransfer("sftp", None)
    elif request.command is not None:
        found = classify_exec(request.command)
    else:
        return None  # a shell: the recording covers it
    if found is None:
        return None
    refusal = policy.exec_refusal(found)
    if refusal is not None:
        await _refuse(session, scope, found, refusal, request.command)
    if not isinstance(found, ExecTransfer):
        return None  # nothing is limited: it runs, recorded like any command
    if policy.paths is not None and found.tool != "sftp":
        # Their paths are resolved by the target's scp, rsync or dd, symlinks and all, where
        # the gateway cannot check them (SFTP's it can: SftpPathGuard).
        what = found.tool if found.direction is None else f"{found.tool} {found.direction}"
        await _refuse(session, scope, found, f"pamgate: {what} refused: {policy.source} holds "
                      f"file transfers to {', '.join(policy.paths)}, which only SFTP can keep "
                      "to (use sftp, or scp without -O)", request.command)  # fmt: skip
    command = request.command or ""
    auditor: Auditor
    if found.tool == "sftp":
        auditor = SftpAuditor(policy)
    elif found.tool == "scp":
        auditor = ScpAuditor(policy, found)
    elif found.tool == "rsync":
        auditor = RsyncAuditor(policy, found, command)
    else:
        auditor = StreamAuditor(policy, found, command)
    audited = TransferFilter(auditor, session, scope)
    if found.tool == "sftp" and policy.paths is not None:
        # A path scope holds for the paths the target resolves too (symlinks, '..').
        return SftpPathGuard(audited, policy, session.send_to_target)
    return audited


async def _refuse(
    session: RelayedSession,
    scope: TransferScope,
    found: Found,
    message: str,
    command: str | None,
) -> None:
    details: dict[str, object] = {"tool": "unknown", "operation": "command"}
    if isinstance(found, ExecTransfer):
        details["tool"] = found.tool
        details["operation"] = "SFTP" if found.direction is None else (
            f"{found.tool} {found.direction}")  # fmt: skip
    elif found is not None and found.tool is not None:
        details["tool"] = found.tool
    if command is not None:
        details["command"] = command[:500]
    event = FileEvent("file.refused", "refused", details, reason=message)
    if not await record_file_event(session, scope, event):
        raise PamgateError("the file transfer could not be audited, so it is refused")
    raise TransferRefused(message.removeprefix("pamgate: "))
