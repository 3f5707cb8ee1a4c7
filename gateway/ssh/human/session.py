"""A session on the human lane: admission by policy and approval, then the shared relay.

:class:`HumanSession` decides where an authenticated admin's session goes:
a self-service command (``request``, ``requests``, ``breakglass``), or a
target settled by :class:`~gateway.ssh.human.admission.Admission` (menu, policy,
approval wait, break-glass). While the session is live it ends when its
grant ends (with warnings 5 and 1 minutes before) or is revoked, or when the
user is disabled.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.domain.access import Destination, parse_login_name
from gateway.domain.approvals import GrantView
from gateway.domain.audit.trail import ActorType
from gateway.domain.identities import UserView
from gateway.domain.policy import AccessContext
from gateway.domain.transfer.policy import transfer_policy_of_rule
from gateway.ssh.human.admission import Admission
from gateway.ssh.human.self_service import is_gateway_command, run_gateway_command
from gateway.ssh.relay import GATEWAY_EXIT_STATUS, SessionHost
from gateway.ssh.transfer.filter import FileTransferSession
from gateway.ssh.watch import LiveChecks, WatchSubject

#: Seconds before a grant ends at which the user is warned.
GRANT_WARNINGS = (300, 60)


@dataclass(frozen=True)
class SessionContext:
    """Who is asking, from where, with which login name."""

    user: UserView
    login_name: str
    source: str


class HumanSession(FileTransferSession):
    """The client side of a relayed session on the human lane."""

    lane = "human"
    actor_type = ActorType.HUMAN

    def __init__(self, context: SessionContext, host: SessionHost) -> None:
        super().__init__(
            host, actor=context.user.name, login_name=context.login_name, source=context.source
        )
        self._ctx = context
        self._grant: GrantView | None = None
        self._warned: set[int] = set()

    def subsystem_requested(self, subsystem: str) -> bool:
        # SFTP is accepted here and held to the rule's file_transfer once admitted.
        if subsystem == "sftp":
            self._subsystem = subsystem
            return True
        self._host.record_soon(
            self._event(
                "channel.refused",
                "refused",
                reason="only the sftp subsystem is relayed on the human lane",
                kind="subsystem",
                subsystem=subsystem[:64],
            )
        )
        return False

    async def _admit(self) -> Destination | None:
        if await self._ran_gateway_command():
            return None
        assert self._dialog is not None
        admission = Admission(
            self._services, self._ctx, self._dialog, pty=self._term_type is not None
        )
        destination = await admission.settle()
        if destination is None:
            self._exit(GATEWAY_EXIT_STATUS)
            return None
        self._grant = destination.grant
        user = self._ctx.user
        context = AccessContext(
            user.name, user.groups, destination.target.name, destination.account,
            self._ctx.source, datetime.now(UTC),
        )  # fmt: skip
        rule = self._services.access.policy.governing_rule(context)
        await self._apply_transfer_policy(
            transfer_policy_of_rule(rule), destination.authority, destination.target.name,
            destination.account,
        )  # fmt: skip
        return destination

    async def _ran_gateway_command(self) -> bool:
        """Run a self-service command (request, requests, breakglass) if that is what came."""
        login = parse_login_name(self._ctx.login_name)
        if not is_gateway_command(self._command, has_target=login.target is not None):
            return False
        assert self._command is not None
        user = self._ctx.user
        result = await asyncio.to_thread(
            run_gateway_command, self._services, user=user.name, groups=user.groups,
            source=self._ctx.source, command=self._command, target=login.target,
            account=login.account,
        )  # fmt: skip
        output = result.output
        if self._term_type is not None:
            output = output.replace("\r\n", "\n").replace("\n", "\r\n")  # raw pty: no staircase
        self._answer(result.status, output)
        return True

    def check_time(self) -> str | None:
        grant = self._grant
        if grant is None:
            return None
        left = (grant.ends_at - datetime.now(UTC)).total_seconds()
        if left <= 0:
            return f"grant #{grant.id} has ended; the session was closed"
        total = (grant.ends_at - grant.starts_at).total_seconds()
        for mark in GRANT_WARNINGS:
            if left <= mark < total and mark not in self._warned:
                self._warned.add(mark)
                self._tell_user(f"access under grant #{grant.id} ends in {mark // 60} min")
        return None

    @property
    def watch_subject(self) -> WatchSubject:
        return WatchSubject(
            session_id=self._session_id,
            user=self._ctx.user.name,
            grant_id=self._grant.id if self._grant is not None else None,
        )

    def _revoked_because(self, checks: LiveChecks) -> str | None:
        if self._ctx.user.name in checks.disabled_users:
            return f"user {self._ctx.user.name} was disabled"
        if self._grant is not None and self._grant.id in checks.revoked_grants:
            reason = checks.revoked_grants[self._grant.id]
            return f"grant #{self._grant.id} was revoked ({reason})"
        return None
