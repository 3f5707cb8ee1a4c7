"""The machine lane: SSH for non-human identities, with certificates from the machine CA only.

Authentication, as the stock OpenSSH client sees it: ``publickey`` only.
For an NHI's login name (``svc-backup``, ``svc-backup:db01``,
``svc-backup:postgres@db01``) only a certificate is accepted, and only if
:class:`~gateway.machine_admission.MachineGate` passes it. Plain keys,
passwords and keyboard-interactive are refused.

One login name is special: ``pamgate-join``. It accepts any plain key, which
proves the workload holds it, and then the session can do nothing but trade
a join token (on stdin) for a certificate on that key (on stdout).

Every outcome goes to the **machine** audit trail: accepted logins (written
before any session may start: fail closed), refusals with their reason, and
refused channels. Port, agent and X11 forwarding are refused and audited.
"""

from __future__ import annotations

import asyncio
import logging

import asyncssh

from gateway.access import user_part
from gateway.audit import ActorType, AuditEvent, Trail
from gateway.errors import PamgateError
from gateway.lane import FORWARDING_REFUSED, Lane, RefusesAgentAndX11, RefusesForwarding
from gateway.machine_admission import MachineAuthRefused, MachineLogin
from gateway.machine_session import JOIN_USER, MachineJoinSession, MachineSession
from gateway.ssh_certificates import is_certificate, parse_certificate
from gateway.ssh_listener import listen_with_connection_class
from gateway.upstream_ca import load_private_key

logger = logging.getLogger("pamgate.machine_lane")

#: Distinct keys judged on one connection before it is cut off.
MAX_KEYS_PER_CONNECTION = 8


class MachineLaneConnection(RefusesAgentAndX11, asyncssh.SSHServerConnection):  # type: ignore[misc]
    """Server connection that puts every certificate through the machine gate first.

    asyncssh's own checks (signature, validity, principal, source-address)
    still run afterwards; the gate adds what OpenSSH checks and asyncssh
    does not (no principals, SHA-1 CA signatures) and pamgate's own rules.
    """

    async def _validate_client_certificate(
        self, username: str, key_data: bytes
    ) -> asyncssh.SSHKey | None:
        owner = self._owner
        if not is_certificate(key_data):
            return None  # a plain key: judged by MachineLaneServer.validate_public_key
        if not isinstance(owner, MachineLaneServer) or not await owner.admit_certificate(
            username, key_data
        ):
            return None
        # The gate matched the principal against the NHI part of the login name
        # (svc:db01 logs in as svc); asyncssh compares the whole name.
        return await super()._validate_client_certificate(user_part(username), key_data)

    def get_certificate_option(self, option: str, default: object = None) -> object:
        # asyncssh would swap a force-command in for whatever the client asked,
        # as sshd does; pamgate enforces it itself (MachineGate.command) and
        # refuses a different command instead of running the forced one silently.
        if option == "force-command":
            return default
        return super().get_certificate_option(option, default)

    def check_certificate_permission(self, permission: str) -> bool:
        # asyncssh refuses what the certificate does not permit (pty, port
        # forwarding) before any server callback runs; audit it here.
        permitted = super().check_certificate_permission(permission)
        if not permitted and isinstance(self._owner, MachineLaneServer):
            self._owner.refuse_channel(permission, why="not permitted by the certificate")
        return permitted


class MachineLaneServer(RefusesForwarding, asyncssh.SSHServer):
    """One workload's connection: certificate authentication and session admission."""

    def __init__(self, lane: MachineLane) -> None:
        self._lane = lane
        self._services = lane.services
        self._conn: asyncssh.SSHServerConnection | None = None
        self._source = "unknown"
        self._login_name = ""
        #: Verdicts per presented key blob: a client asks about a key, then signs with it.
        self._verdicts: dict[bytes, MachineLogin | None] = {}
        self._login: MachineLogin | None = None
        self._join_key: str | None = None
        self._login_recorded: asyncio.Future[bool] | None = None
        #: Why keys were refused; audited as one event if the connection never logs in.
        self._refusals: list[dict[str, str]] = []

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername")
        if peer:
            self._source = str(peer[0])

    def begin_auth(self, username: str) -> bool:
        self._login_name = username
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    # -- certificates (NHIs) ---------------------------------------------

    async def admit_certificate(self, username: str, key_data: bytes) -> bool:
        """Judge a presented certificate once per connection; refusals are audited."""
        if key_data in self._verdicts:
            verdict = self._verdicts[key_data]
        else:
            if len(self._verdicts) >= MAX_KEYS_PER_CONNECTION:
                return False
            verdict = await asyncio.to_thread(self._judge, username, key_data)
            self._verdicts[key_data] = verdict
        if verdict is None:
            return False
        self._login = verdict
        return True

    def _judge(self, username: str, key_data: bytes) -> MachineLogin | None:
        try:
            if username == JOIN_USER:
                raise MachineAuthRefused(f"{JOIN_USER} takes a plain key, not a certificate")
            certificate = parse_certificate(key_data)
            return self._services.machine_gate.check(username, certificate, source=self._source)
        except PamgateError as exc:
            self._refusals.append({"method": "publickey-certificate", "reason": str(exc)})
            return None

    def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        ca_line = self._services.machine_ca.public_key_line()
        return key.export_public_key("openssh").split()[:2] == ca_line.encode().split()[:2]

    # -- plain keys (the join exchange only) ----------------------------------

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if username == JOIN_USER:
            self._join_key = " ".join(key.export_public_key("openssh").decode().split()[:2])
            return True
        self._refusals.append({
            "method": "publickey", "key": key.get_fingerprint(),
            "reason": "plain keys are not accepted: use a certificate from the machine CA",
        })  # fmt: skip
        return False

    # -- after authentication --------------------------------------------------

    def connection_lost(self, exc: Exception | None) -> None:
        if self._login_recorded is not None or not self._login_name:
            return
        # One event per refused connection: clients offer several keys in turn,
        # so a successful login routinely follows refusals that mean nothing.
        certificate_reasons = [r["reason"] for r in self._refusals if "key" not in r]
        reasons = certificate_reasons or [r["reason"] for r in self._refusals]
        self._lane.record_soon(self._event(
            "auth.refused", "refused", actor=user_part(self._login_name)[:64],
            reason=reasons[0] if reasons else "no certificate offered",
            login=self._login_name[:200], attempts=self._refusals,
        ))  # fmt: skip

    def auth_completed(self) -> None:
        # Sessions wait for this record: no access without an audit record.
        loop = asyncio.get_running_loop()
        if self._login is not None:
            self._login_recorded = loop.create_task(self._record_login(self._login))
        else:
            self._login_recorded = loop.create_future()
            self._login_recorded.set_result(self._join_key is not None)

    async def _record_login(self, login: MachineLogin) -> bool:
        try:
            await asyncio.to_thread(
                self._services.machine_credentials.record_login, login.nhi, login.certificate,
                source=self._source, lineage=login.lineage,
            )  # fmt: skip
        except PamgateError:
            logger.exception("cannot audit the login of %s; refusing it", login.nhi.name)
            return False
        return True

    def session_requested(self) -> asyncssh.SSHServerSession[bytes] | bool:
        recorded = self._login_recorded
        if recorded is None:
            return False
        session: MachineSession | MachineJoinSession
        if self._login is not None:
            session = MachineSession(
                self._login, self._login_name, self._source, self._lane, recorded
            )
        elif self._join_key is not None:
            session = MachineJoinSession(self._join_key, self._source, self._lane)
        else:
            return False
        self._lane.sessions.add(session)
        return session

    def refuse_channel(self, kind: str, **details: str) -> None:
        actor = self._login.nhi.name if self._login else user_part(self._login_name)[:64]
        self._lane.record_soon(self._event(
            "channel.refused", "refused", actor=actor, reason=FORWARDING_REFUSED, kind=kind,
            **details,
        ))  # fmt: skip

    def _event(
        self, action: str, outcome: str, *, actor: str, reason: str = "", **details: object
    ) -> AuditEvent:
        return AuditEvent(
            actor=actor or "unknown", actor_type=ActorType.MACHINE, action=action,
            outcome=outcome, source=self._source, reason=reason, details=details,
        )  # fmt: skip


class MachineLane(Lane):
    """The machine lane's listener and its running session tasks."""

    trail = Trail.MACHINE

    async def start(self) -> None:
        """Start listening on the configured address and port."""
        settings = self.services.config.listeners.machine
        host_key = load_private_key(self.services.data.machine_host_key, "machine lane host")
        self._acceptor = await listen_with_connection_class(
            settings.address,
            settings.port,
            connection_class=MachineLaneConnection,
            server_factory=lambda: MachineLaneServer(self),
            server_host_keys=[host_key],
            encoding=None,
            line_editor=False,
            allow_pty=True,
            x11_forwarding=False,
            agent_forwarding=False,
            login_timeout=30,
            keepalive_interval=30,
        )
        logger.info("machine lane listening on %s:%s", settings.address, self.port)
