"""A session channel of an NHI on the machine lane: a scoped command relayed to a target.

:class:`MachineSession` belongs to an NHI that logged in with a certificate.
``pamgate-renew`` is answered by the gateway
(:class:`~gateway.ssh.machine.exchanges.RenewExchange`). Anything else is
held to the NHI's scope by :class:`~gateway.domain.machines.admission.MachineGate`
(target account, command, force-command, no pty unless allowed), audited as
``command.allowed`` or ``command.refused``, and relayed like a human
session, with a fresh upstream certificate and a recording of the exec. The
session ends within about 2 s of the NHI being suspended or offboarded, its
certificate being revoked, or what it runs leaving the NHI's scope (a review
narrowed it); a new session on an open connection is judged by the scope as
it is then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway.domain.access import Destination
from gateway.domain.audit.trail import ActorType, AuditEvent
from gateway.domain.live_checks import LiveChecks, WatchSubject
from gateway.domain.machines.admission import MachineGate, MachineLogin, ScopeRefused
from gateway.domain.transfer.policy import TransferMode, TransferPolicy
from gateway.errors import PamgateError
from gateway.ssh.channel import SessionChannel
from gateway.ssh.machine.exchanges import RENEW_COMMAND, RenewExchange
from gateway.ssh.relay import Admitted, RelayedSession, SessionHost
from gateway.ssh.transfer.filter import TransferScope, transfer_filter_for


class MachineLiveRules:
    """What ends a live NHI session: the NHI suspended or offboarded, its certificate
    revoked, or what the session runs taken out of the NHI's scope."""

    def __init__(self, gate: MachineGate, login: MachineLogin) -> None:
        self._gate = gate
        self._login = login
        #: (target, account, command or None for SFTP), once the session is admitted.
        self._admitted: tuple[str, str, str | None] | None = None

    def admitted(self, target: str, account: str, command: str | None) -> None:
        """The session runs ``command`` (None: SFTP) as ``account@target`` from now on."""
        self._admitted = (target, account, command)

    def subject(self, session_id: str | None) -> WatchSubject:
        return WatchSubject(session_id=session_id, nhi=self._login.nhi.name)

    def check_time(self, tell_user: Callable[[str], None]) -> str | None:
        return None

    def revoked_because(self, checks: LiveChecks) -> str | None:
        nhi = checks.machines.get(self._login.nhi.name)
        reason = self._gate.revoked_because(
            self._login, status=nhi.status if nhi is not None else "removed"
        )
        if reason or nhi is None or self._admitted is None:
            return reason
        return self._gate.out_of_scope_because(nhi, *self._admitted)


class MachineSession:
    """One session channel of an NHI authenticated by certificate (see the module docstring)."""

    def __init__(
        self,
        host: SessionHost,
        login: MachineLogin,
        login_name: str,
        source: str,
        login_recorded: asyncio.Future[bool],
    ) -> None:
        self._host = host
        self._login = login
        self._login_name = login_name
        self._source = source
        self._login_recorded = login_recorded
        self._relayed: RelayedSession | None = None
        self._rules: MachineLiveRules | None = None
        self._command: str | None = None
        self._pty = False

    @property
    def _authority(self) -> str:
        return f"{self._login.nhi.scope_id};serial={self._login.certificate.serial}"

    # -- the channel's callbacks (gateway.ssh.channel.ChannelHandler) ---------------

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem == "sftp" and self._login.nhi.allow_sftp:
            return True
        self._host.record_soon(self._event(
            "channel.refused", authority=self._authority, kind="subsystem",
            subsystem=subsystem[:64],
            reason=f"subsystem {subsystem[:64]!r} is not in {self._login.nhi.name}'s scope",
        ))  # fmt: skip
        return False

    async def run(self, channel: SessionChannel) -> None:
        services = self._host.services
        self._command, self._pty = channel.request.command, channel.request.pty
        self._rules = MachineLiveRules(services.machine_gate, self._login)
        self._relayed = RelayedSession(
            channel, self._host, lane="machine", actor_type=ActorType.MACHINE,
            actor=self._login.nhi.name, source=self._source, rules=self._rules,
        )  # fmt: skip
        await self._relayed.run(lambda: self._admit(channel), self._record_refusal)

    def channel_closed(self) -> None:
        if self._relayed is not None:
            self._relayed.channel_closed()

    def terminate(self, reason: str) -> None:
        """End the session from the gateway's side (the lane is stopping)."""
        if self._relayed is not None:
            self._relayed.terminate(reason)

    # -- admission ------------------------------------------------------------------

    async def _admit(self, channel: SessionChannel) -> Admitted | None:
        if not await self._login_recorded:
            raise PamgateError("the login could not be audited, so it is refused")
        services, request = self._host.services, channel.request
        gate = services.machine_gate
        # Each session is a new decision: the connection may outlive a revocation, or a
        # change of the NHI's scope; the session is judged by the scope as it is now.
        run_db = services.executors.run_db
        refused = await run_db(gate.new_session_refused_because, self._login)
        if refused:
            raise PamgateError(refused)
        login = self._login = await run_db(gate.refreshed, self._login)
        if request.command is not None and request.command.split()[:1] == [RENEW_COMMAND]:
            await RenewExchange(self._host, login, self._source).run(channel, self._authority)
            return None
        target, account = gate.destination(login, self._login_name, services.config)
        if request.subsystem is None:
            request.command = gate.command(login, request.command, pty=request.pty)
            self._command = request.command
        elif login.options.force_command is not None:
            raise ScopeRefused(
                f"this certificate may only run: {login.options.force_command[:200]}"
            )
        elif not login.nhi.allow_sftp:  # asked for when the scope still had it
            raise ScopeRefused(f"SFTP is not in {login.nhi.name}'s scope")
        else:
            gate.check_pty(login, request.pty)
        what = request.command if request.subsystem is None else f"subsystem:{request.subsystem}"
        allowed = self._event(
            "command.allowed", outcome="success", target=target.name, account=account,
            authority=self._authority, command=what, serial=login.certificate.serial,
        )  # fmt: skip
        if not await self._host.record(allowed):
            raise PamgateError("the command could not be audited, so it is refused")
        assert self._rules is not None
        self._rules.admitted(
            target.name, account, request.command if request.subsystem is None else None
        )
        # The scope's command list already decided what may run; the transfer policy
        # adds the per-file audit and the scope's directories.
        nhi = login.nhi
        policy = TransferPolicy(TransferMode.ALLOW, nhi.scope_id, paths=nhi.sftp_paths)
        assert self._relayed is not None
        scope = TransferScope(self._authority, target.name, account)
        payload_filter = await transfer_filter_for(request, policy, self._relayed, scope)
        return Destination(target, account, self._authority), payload_filter

    async def _record_refusal(self, reason: str) -> None:
        await self._host.record(self._event(
            "command.refused", reason=reason, authority=self._authority,
            command=(self._command or "")[:500], login=self._login_name[:200], pty=self._pty,
        ))  # fmt: skip

    def _event(
        self,
        action: str,
        *,
        outcome: str = "refused",
        reason: str = "",
        target: str | None = None,
        account: str | None = None,
        authority: str | None = None,
        **details: object,
    ) -> AuditEvent:
        return AuditEvent(
            actor=self._login.nhi.name, actor_type=ActorType.MACHINE, action=action,
            outcome=outcome, target=target, account=account, source=self._source,
            reason=reason, authority=authority, details=details,
        )  # fmt: skip
