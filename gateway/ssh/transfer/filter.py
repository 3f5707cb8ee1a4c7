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

from gateway.domain.transfer.policy import Direction, ExecTransfer, TransferPolicy, classify_exec
from gateway.errors import PamgateError
from gateway.ssh.channel import SessionRequest
from gateway.ssh.relay import RelayedSession
from gateway.ssh.transfer.events import FileEvent, Verdict
from gateway.ssh.transfer.sftp_auditor import SftpAuditor
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
            return self._apply(auditor.from_client(data))
        return self._apply(auditor.data(data)) if self._data_from_client else data

    def to_client(self, data: bytes) -> bytes:
        auditor = self._auditor
        if isinstance(auditor, SftpAuditor):
            return self._apply(auditor.from_target(data))
        return data if self._data_from_client else self._apply(auditor.data(data))

    def finished(self) -> None:
        self._record(self._auditor.finish())

    def _apply(self, verdict: Verdict) -> bytes:
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
) -> TransferFilter | None:
    """The filter for an SFTP subsystem or a recognised scp/rsync exec; None for other sessions.

    Raises TransferRefused (after auditing it) when the policy forbids the
    transfer altogether.
    """
    if request.subsystem == "sftp":
        if not policy.allows_any:
            await _refuse(session, scope, "sftp", "SFTP", policy)
        return TransferFilter(SftpAuditor(policy), session, scope, data_from_client=True)
    transfer = classify_exec(request.command) if request.command is not None else None
    if transfer is None:
        return None
    if not policy.allows(transfer.direction) or (
        policy.paths is not None and not _exec_paths_allowed(transfer, policy)
    ):
        await _refuse(session, scope, transfer.tool, f"{transfer.tool} {transfer.direction}",
                      policy, command=request.command)  # fmt: skip
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
    **details: object,
) -> None:
    message = policy.refusal(what)
    event = FileEvent("file.refused", "refused", {"tool": tool, "operation": what, **details},
                      reason=message)  # fmt: skip
    if not await record_file_event(session, scope, event):
        raise PamgateError("the file transfer could not be audited, so it is refused")
    raise TransferRefused(message.removeprefix("pamgate: "))


def _exec_paths_allowed(transfer: ExecTransfer, policy: TransferPolicy) -> bool:
    return bool(transfer.paths) and all(
        policy.path_refused_because(path) is None for path in transfer.paths
    )
