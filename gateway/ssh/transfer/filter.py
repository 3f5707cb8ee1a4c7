"""The relay hook that puts a file transfer through its auditor and records what it says.

:func:`transfer_filter_for` looks at what a session asked for (the SFTP
subsystem, or an ``scp``/``rsync`` server command) and, under the session's
:class:`~gateway.domain.transfer.policy.TransferPolicy`, either refuses it
(audited as ``file.refused``) or returns a :class:`TransferFilter` for the
relay. Other sessions get no filter.

:class:`TransferFilter` is a :class:`~gateway.ssh.pipe.PayloadFilter`: each
chunk goes through the auditor of :mod:`gateway.ssh.transfer.sftp_auditor` and
:mod:`gateway.ssh.transfer.stream_auditors`, the
gateway's own SFTP replies go to the client, notices to the client's stderr,
and audit events to the lane's trail in order. If an event cannot be
written, or the auditor says the stream is hostile or over its cap, the
session ends (fail closed).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass

from gateway.domain.transfer.policy import Direction, TransferPolicy, classify_exec
from gateway.errors import PamgateError
from gateway.ssh.channel import SessionRequest
from gateway.ssh.relay import RelayedSession
from gateway.ssh.transfer.events import FileEvent, Verdict
from gateway.ssh.transfer.sftp_auditor import SftpAuditor
from gateway.ssh.transfer.sftp_paths import SftpPathGuard
from gateway.ssh.transfer.stream_auditors import ScpAuditor, StreamAuditor

logger = logging.getLogger("pamgate.transfer")


class TransferRefused(PamgateError):
    """The session's policy does not allow this file transfer."""


@dataclass(frozen=True)
class TransferScope:
    """Where a session's file events point: the authority, target and account behind it."""

    authority: str
    target: str
    account: str


class TransferFilter:
    """Runs a session's payload through an auditor; see the module docstring."""

    def __init__(
        self,
        auditor: SftpAuditor | ScpAuditor | StreamAuditor,
        session: RelayedSession,
        scope: TransferScope,
        *,
        data_from_client: bool,
    ) -> None:
        self._auditor = auditor
        self._session = session
        self._scope = scope
        self._data_from_client = data_from_client
        self._events: collections.deque[FileEvent] = collections.deque()
        self._writer: asyncio.Task[None] | None = None

    def to_target(self, data: bytes) -> bytes:
        auditor = self._auditor
        if isinstance(auditor, SftpAuditor):
            return self.apply(auditor.from_client(data))
        return self.apply(auditor.data(data)) if self._data_from_client else data

    def to_client(self, data: bytes) -> bytes:
        auditor = self._auditor
        if isinstance(auditor, SftpAuditor):
            return self.apply(auditor.from_target(data))
        return data if self._data_from_client else self.apply(auditor.data(data))

    def finished(self) -> None:
        self._record(self._auditor.finish())

    def apply(self, verdict: Verdict) -> bytes:
        """Carry out a verdict (replies, notices, events, abort); returns the bytes to pass on."""
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
    """The filter for an SFTP subsystem or a recognised scp/rsync exec; None for other sessions.

    Raises TransferRefused (after auditing it) when the policy forbids the
    transfer altogether.
    """
    if request.subsystem == "sftp":
        if not policy.allows_any:
            await _refuse(session, scope, "sftp", "SFTP", policy)
        sftp = TransferFilter(SftpAuditor(policy), session, scope, data_from_client=True)
        # A path scope holds for the paths the target resolves too (symlinks, '..').
        return sftp if policy.paths is None else SftpPathGuard(sftp, policy, session.send_to_target)
    transfer = classify_exec(request.command) if request.command is not None else None
    if transfer is None:
        return None
    what = f"{transfer.tool} {transfer.direction}"
    if not policy.allows(transfer.direction):
        await _refuse(session, scope, transfer.tool, what, policy, command=request.command)
    if policy.paths is not None:
        # Their paths are resolved by the target's scp or rsync, symlinks and all, where the
        # gateway cannot check them (SFTP's it can: SftpPathGuard).
        await _refuse(session, scope, transfer.tool, what, policy, command=request.command,
                      message=f"pamgate: {what} refused: {policy.source} holds file transfers to "
                      f"{', '.join(policy.paths)}, which only SFTP can keep to (use sftp, or "
                      "scp without -O)")  # fmt: skip
    auditor: ScpAuditor | StreamAuditor
    if transfer.tool == "scp":
        auditor = ScpAuditor(policy, transfer)
    else:
        auditor = StreamAuditor(policy, transfer, request.command or "")
    uploading = transfer.direction == Direction.UPLOAD
    return TransferFilter(auditor, session, scope, data_from_client=uploading)


async def _refuse(
    session: RelayedSession,
    scope: TransferScope,
    tool: str,
    what: str,
    policy: TransferPolicy,
    message: str | None = None,
    **details: object,
) -> None:
    message = message or policy.refusal(what)
    event = FileEvent("file.refused", "refused", {"tool": tool, "operation": what, **details},
                      reason=message)  # fmt: skip
    if not await record_file_event(session, scope, event):
        raise PamgateError("the file transfer could not be audited, so it is refused")
    raise TransferRefused(message.removeprefix("pamgate: "))

