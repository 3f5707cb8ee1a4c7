"""The relay hook that puts a file transfer through its auditor and records what it says.

:class:`TransferFilter` is a :class:`~gateway.ssh.relay.PayloadFilter`: each
chunk goes through the auditor of :mod:`gateway.ssh.transfer.auditors`, the
gateway's own SFTP replies go to the client, notices to the client's
stderr, and audit events to the lane's trail in order. If an event cannot be
written, or the auditor says the stream is hostile or over its cap, the
session ends (fail closed).

:class:`FileTransferSession` is the part of a lane's session that sets the
filter up: SFTP subsystems and ``scp``/``rsync`` execs, under a
:class:`~gateway.domain.transfer.policy.TransferPolicy`.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging

from gateway.domain.transfer.policy import Direction, ExecTransfer, TransferPolicy, classify_exec
from gateway.errors import PamgateError
from gateway.ssh.relay import RelayedSession
from gateway.ssh.transfer.auditors import FileEvent, ScpAuditor, SftpAuditor, StreamAuditor, Verdict

logger = logging.getLogger("pamgate.transfer")


class TransferRefused(PamgateError):
    """The session's policy does not allow this file transfer."""


class TransferFilter:
    """Runs a session's payload through an auditor; see the module docstring."""

    def __init__(
        self,
        auditor: SftpAuditor | ScpAuditor | StreamAuditor,
        session: FileTransferSession,
        *,
        data_from_client: bool,
    ) -> None:
        self._auditor = auditor
        self._session = session
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
        session = self._session
        if verdict.reply:
            session.reply_to_client(verdict.reply)
        for notice in verdict.notices:
            if notice != verdict.abort:  # terminate() says that one
                session.notify_client(notice)
        self._record(verdict.events)
        if verdict.abort:
            asyncio.get_running_loop().call_soon(session.terminate, verdict.abort)
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
            if not await self._session.record_file_event(event):
                self._events.clear()
                self._session.terminate(
                    "the file transfer could not be audited, so the session was ended"
                )
                return


class FileTransferSession(RelayedSession):
    """A relayed session that can carry file transfers under a policy (both lanes)."""

    #: What file events carry as their authority (``grant:N``, ``policy:ID``, ``nhi:NAME``).
    _transfer_authority: str | None = None
    _transfer_target: str | None = None
    _transfer_account: str | None = None

    async def _apply_transfer_policy(
        self, policy: TransferPolicy, authority: str, target: str, account: str
    ) -> None:
        """Set up the filter for an SFTP subsystem or a recognised scp/rsync exec.

        Raises TransferRefused (after auditing it) when the policy forbids
        the transfer altogether; other sessions are left alone.
        """
        self._transfer_authority = authority
        self._transfer_target, self._transfer_account = target, account
        if self._subsystem == "sftp":
            if not policy.allows_any:
                await self._refuse_transfer("sftp", "SFTP", policy)
            self._filter = TransferFilter(SftpAuditor(policy), self, data_from_client=True)
            return
        transfer = classify_exec(self._command) if self._command is not None else None
        if transfer is None:
            return
        if not policy.allows(transfer.direction) or (
            policy.paths is not None and not _exec_paths_allowed(transfer, policy)
        ):
            await self._refuse_transfer(transfer.tool, f"{transfer.tool} {transfer.direction}",
                                        policy, command=self._command)  # fmt: skip
        auditor: ScpAuditor | StreamAuditor
        if transfer.tool == "scp":
            auditor = ScpAuditor(policy, transfer)
        else:
            auditor = StreamAuditor(policy, transfer, self._command or "")
        uploading = transfer.direction == Direction.UPLOAD
        self._filter = TransferFilter(auditor, self, data_from_client=uploading)

    async def _refuse_transfer(
        self, tool: str, what: str, policy: TransferPolicy, **details: object
    ) -> None:
        message = policy.refusal(what)
        event = FileEvent("file.refused", "refused", {"tool": tool, "operation": what, **details},
                          reason=message)  # fmt: skip
        if not await self.record_file_event(event):
            raise PamgateError("the file transfer could not be audited, so it is refused")
        raise TransferRefused(message.removeprefix("pamgate: "))

    # -- what the filter calls ------------------------------------------------

    def reply_to_client(self, data: bytes) -> None:
        """Send the gateway's own protocol reply on the client's channel."""
        if self._chan is not None and not self._chan.is_closing():
            self._chan.write(data)

    def notify_client(self, message: str) -> None:
        """A line on the client's stderr (the stock tools show it)."""
        if self._chan is not None and not self._chan.is_closing():
            self._chan.write_stderr((message + "\r\n").encode())

    def track(self, task: asyncio.Task[None]) -> None:
        """Keep a background task alive until it finishes."""
        self._host.track_task(task)

    async def record_file_event(self, event: FileEvent) -> bool:
        """Append a file event to the lane's trail; False if that failed."""
        audit = self._event(
            event.action, event.outcome, reason=event.reason, target=self._transfer_target,
            session_id=self._session_id, authority=self._transfer_authority, **event.details,
        )  # fmt: skip
        return await self._host.record(dataclasses.replace(audit, account=self._transfer_account))


def _exec_paths_allowed(transfer: ExecTransfer, policy: TransferPolicy) -> bool:
    return bool(transfer.paths) and all(
        policy.path_refused_because(path) is None for path in transfer.paths
    )
