"""A session channel on the human lane: a self-service command, or a session relayed to a target.

:class:`HumanSession` is the lane's :class:`~gateway.ssh.channel.ChannelHandler`.
A self-service command (``request``, ``requests``, ``breakglass``, and
``pamgate-login``/``pamgate-logout``, :mod:`gateway.ssh.human.login_exchange`)
is answered by the gateway itself. Anything else is admitted by
:class:`~gateway.ssh.human.admission.Admission` (menu, the access decision,
approval wait, break-glass), held to its rule's file-transfer limits and
relayed (:class:`~gateway.ssh.relay.RelayedSession`). While it is live it ends
as :mod:`gateway.ssh.human.live_rules` says: grant ended or revoked, user
disabled, or the access decision no longer allowing it.
"""

from __future__ import annotations

from gateway.domain.access import parse_login_name
from gateway.domain.audit.trail import ActorType, AuditEvent
from gateway.domain.sign_in import SignedIn
from gateway.domain.transfer.policy import transfer_policy_of_rule
from gateway.errors import AccessDenied, DestinationError
from gateway.ssh.channel import GATEWAY_EXIT_STATUS, SessionChannel
from gateway.ssh.gateway_program import GatewayProgram
from gateway.ssh.human.admission import Admission
from gateway.ssh.human.live_rules import HumanLiveRules
from gateway.ssh.human.login_exchange import LOGOUT_COMMAND, LoginExchange, is_login_command
from gateway.ssh.human.operator_session import OPERATOR_SERVICES, operator_program
from gateway.ssh.human.self_service import is_gateway_command, run_gateway_command
from gateway.ssh.relay import Admitted, RelayedSession, SessionHost
from gateway.ssh.transfer.filter import TransferScope, transfer_filter_for


class HumanSession:
    """One session channel of an authenticated admin (see the module docstring)."""

    def __init__(
        self, host: SessionHost, signed_in: SignedIn, login_name: str, source: str
    ) -> None:
        self._host = host
        self._signed_in = signed_in
        self._user = signed_in.user
        self._login_name = login_name
        self._source = source
        self._relayed: RelayedSession | None = None
        self._rules = HumanLiveRules(
            host.services.access, signed_in.user.name, source,
            login_certificate=signed_in.certificate_serial,
        )  # fmt: skip

    # -- the channel's callbacks (gateway.ssh.channel.ChannelHandler) ---------------

    def subsystem_requested(self, subsystem: str) -> bool:
        # SFTP is accepted here and held to the rule's file_transfer once admitted.
        if subsystem == "sftp":
            return True
        self._host.record_soon(self._refusal_event(
            "channel.refused", reason="only the sftp subsystem is relayed on the human lane",
            kind="subsystem", subsystem=subsystem[:64],
        ))  # fmt: skip
        return False

    async def run(self, channel: SessionChannel) -> None:
        self._relayed = RelayedSession(
            channel, self._host, lane="human", actor_type=ActorType.HUMAN,
            actor=self._user.name, source=self._source, rules=self._rules,
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
        certificate = self._signed_in.certificate
        if certificate is not None and channel.request.command != LOGOUT_COMMAND:
            # Every new channel asks again: a multiplexed connection outlives no revocation.
            refused = await self._host.services.executors.run_db(
                self._host.services.login_certificates.new_channel_refused_because, certificate
            )
            if refused:
                raise AccessDenied(refused)
        if await self._ran_gateway_command(channel):
            return None
        assert channel.dialog is not None and self._relayed is not None
        login = parse_login_name(self._login_name)
        if login.target in OPERATOR_SERVICES and login.account is None:
            return await self._admit_operator(channel, login.target), None
        admission = Admission(
            self._host.services, self._user, self._login_name, self._source, channel.dialog,
            pty=channel.request.pty, fresh_code=self._signed_in.fresh_code,
        )  # fmt: skip
        allowed = await admission.settle()
        if allowed == "console":
            return await self._admit_operator(channel, "console"), None
        if allowed is None:
            channel.exit(GATEWAY_EXIT_STATUS)
            return None
        self._rules.admitted(allowed)
        scope = TransferScope(allowed.authority, allowed.target.name, allowed.account)
        payload_filter = await transfer_filter_for(
            channel.request, transfer_policy_of_rule(allowed.rule), self._relayed, scope
        )
        return allowed.destination, payload_filter

    async def _admit_operator(self, channel: SessionChannel, service: str) -> GatewayProgram:
        """The console or an admin command for this user (see operator_session)."""
        services = self._host.services
        program = await self._host.services.executors.run_db(
            operator_program, services.config, services.operator_actions(self._user.name),
            self._user, service, channel.request,
        )  # fmt: skip
        self._rules.admitted_operator(services.config)
        return program

    async def _ran_gateway_command(self, channel: SessionChannel) -> bool:
        """Run a self-service command (request, requests, breakglass) if that is what came."""
        login = parse_login_name(self._login_name)
        command = channel.request.command
        if is_login_command(command, has_target=login.target is not None):
            await LoginExchange(self._host, self._signed_in, self._source).run(channel)
            return True
        if not is_gateway_command(command, has_target=login.target is not None):
            return False
        assert command is not None
        result = await self._host.services.executors.run_db(
            run_gateway_command, self._host.services, user=self._user.name,
            source=self._source, command=command, target=login.target, account=login.account,
        )  # fmt: skip
        output = result.output
        if channel.request.pty:
            output = output.replace("\r\n", "\n").replace("\n", "\r\n")  # raw pty: no staircase
        channel.answer(result.status, output)
        return True

    async def _record_refusal(self, reason: str) -> None:
        """Audit a session refused before it started (bad or forbidden destination)."""
        try:
            login = parse_login_name(self._login_name)
            target, account = login.target, login.account
        except DestinationError:
            target, account = None, None
        # We are refusing either way; a failed write is logged by the lane.
        await self._host.record(self._refusal_event(
            "access.refused", reason=reason, target=target, account=account
        ))  # fmt: skip

    def _refusal_event(
        self,
        action: str,
        *,
        reason: str,
        target: str | None = None,
        account: str | None = None,
        **details: object,
    ) -> AuditEvent:
        return AuditEvent(
            actor=self._user.name, actor_type=ActorType.HUMAN, action=action, outcome="refused",
            target=target, account=account, source=self._source, reason=reason, details=details,
        )  # fmt: skip
