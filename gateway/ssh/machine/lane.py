"""The machine lane: SSH for non-human identities, with certificates from the machine CA only.

Authentication, as the stock OpenSSH client sees it: ``publickey`` only.
For an NHI's login name (``svc-backup``, ``svc-backup:db01``,
``svc-backup:postgres@db01``) only a certificate is accepted, and only if
:class:`~gateway.domain.machines.admission.MachineGate` passes it. Plain keys,
passwords and keyboard-interactive are refused.

One login name is special: ``pamgate-join``. It accepts any plain key, which
proves the workload holds it, and then the session can do nothing but trade
a join token (on stdin) for a certificate on that key (on stdout).

Every key is first held to the lane's algorithm rules
(:mod:`gateway.ssh.user_keys`: what sshd accepts, no security keys).

Every outcome goes to the **machine** audit trail: accepted logins (written
before any session may start: fail closed), refusals with their reason (the
gate's, the algorithm rules', or asyncssh's own when it refuses a certificate
the gate passed), and refused channels. Port, agent and X11 forwarding are
refused and audited.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncssh

from gateway.config import ListenerSettings
from gateway.crypto.algorithms import MACHINE_LANE_KEYS, UserKeyRules
from gateway.crypto.certificates import (
    fingerprint_of_blob,
    is_certificate,
    key_data_of_blob,
    openssh_key_data,
    parse_certificate,
)
from gateway.domain.access import user_part
from gateway.domain.audit.trail import ActorType, AuditEvent, Trail
from gateway.domain.machines.admission import MachineAuthRefused, MachineLogin
from gateway.errors import PamgateError
from gateway.ssh.channel import SessionChannel
from gateway.ssh.lane import (
    FORWARDING_REFUSED,
    Lane,
    RefusesAgentAndX11,
    RefusesForwarding,
    too_many_sessions,
)
from gateway.ssh.machine.exchanges import JOIN_USER, JoinExchange
from gateway.ssh.machine.session import MachineSession
from gateway.ssh.server_connection import LaneServerConnection, log_disconnect
from gateway.ssh.user_keys import AuditsRefusedKeys, ChecksUserKeys

logger = logging.getLogger("pamgate.machine_lane")

#: Distinct keys judged on one connection before it is cut off.
MAX_KEYS_PER_CONNECTION = 8
#: Refusals kept for a connection's one ``auth.refused`` event.
MAX_REFUSALS_KEPT = 16


class MachineLaneConnection(  # type: ignore[misc]
    ChecksUserKeys, RefusesAgentAndX11, LaneServerConnection
):
    """Server connection that puts every certificate through the machine gate first.

    asyncssh's own checks (signature, validity, principal, source-address)
    still run afterwards; the gate adds what OpenSSH checks and asyncssh
    does not (no principals, SHA-1 CA signatures, repeated options) and
    pamgate's own rules.
    """

    async def validate_public_key(
        self, username: str, key_data: bytes, msg: bytes, signature: bytes
    ) -> bool:
        owner = self._owner
        if not isinstance(owner, MachineLaneServer):
            return False
        if not await super().validate_public_key(username, key_data, msg, signature):
            return False
        if not msg:
            return True  # a query ("would you accept this key?"): nothing is proven yet
        # The signature verified: this client holds the key, for this user name.
        return await owner.key_proven(username, key_data)

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
            self._owner.refuse_channel(
                permission, reason=f"the certificate does not permit {permission} "
                f"(no permit-{permission} extension)",
            )  # fmt: skip
        return permitted


class MachineLaneServer(AuditsRefusedKeys, RefusesForwarding, asyncssh.SSHServer):
    """One workload's connection: certificate authentication and session admission.

    Verdicts on presented keys are kept per (user name, key); a verdict takes
    effect only when the client signs with that key under that user name
    (:meth:`key_proven`), so a public certificate alone, or a change of user
    name half-way through, gets a client nowhere.
    """

    def __init__(self, lane: MachineLane) -> None:
        self._lane = lane
        self._services = lane.services
        self._conn: asyncssh.SSHServerConnection | None = None
        self._source = "unknown"
        self._login_name = ""
        self._verdicts: dict[tuple[str, bytes], MachineLogin | None] = {}
        #: What the signed request proved: an NHI's certificate, or a key for the join.
        self._login: MachineLogin | None = None
        self._join_key: str | None = None
        self._join_started = False
        self._login_recorded: asyncio.Future[bool] | None = None
        #: Why keys were refused; audited as one event if the connection never logs in.
        self._refusals: list[dict[str, str]] = []

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername")
        if peer:
            self._source = str(peer[0])

    def begin_auth(self, username: str) -> bool:
        # A new user name starts over: nothing proven under another name counts.
        self._login_name = username
        self._login, self._join_key = None, None
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    # -- certificates (NHIs) ---------------------------------------------

    async def admit_certificate(self, username: str, key_data: bytes) -> bool:
        """Judge a presented certificate once per user name; refusals are kept for the audit."""
        verdict_key = (username, key_data)
        if verdict_key not in self._verdicts:
            if len(self._verdicts) >= MAX_KEYS_PER_CONNECTION:
                return False
            self._verdicts[verdict_key] = await self._services.executors.run_db(
                self._judge, username, key_data
            )
        return self._verdicts[verdict_key] is not None

    def _judge(self, username: str, key_data: bytes) -> MachineLogin | None:
        try:
            if username == JOIN_USER:
                raise MachineAuthRefused(f"{JOIN_USER} takes a plain key, not a certificate")
            certificate = parse_certificate(key_data)
            return self._services.machine_gate.check(username, certificate, source=self._source)
        except PamgateError as exc:
            self.key_refused(username, key_data, str(exc))
            return None

    def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return openssh_key_data(key) == self._services.machine_ca.public_key_data()

    # -- plain keys (the join exchange only) ----------------------------------

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if username == JOIN_USER:
            return True
        self._note_refusal(
            "publickey", key.get_fingerprint(),
            "plain keys are not accepted: use a certificate from the machine CA",
        )  # fmt: skip
        return False

    @property
    def key_rules(self) -> UserKeyRules:
        return self._lane.key_rules

    def key_refused(self, username: str, key_data: bytes, reason: str) -> None:
        method = "publickey-certificate" if is_certificate(key_data) else "publickey"
        self._note_refusal(method, fingerprint_of_blob(key_data), reason)

    def _note_refusal(self, method: str, fingerprint: str, reason: str) -> None:
        """Keep a refusal for the connection's one ``auth.refused`` event."""
        refusal = {"method": method, "key": fingerprint, "reason": reason}
        if refusal not in self._refusals and len(self._refusals) < MAX_REFUSALS_KEPT:
            self._refusals.append(refusal)

    async def key_proven(self, username: str, key_data: bytes) -> bool:
        """The client signed with ``key_data`` as ``username``: is that a login?"""
        if username == JOIN_USER:
            if is_certificate(key_data):
                return False
            self._join_key = key_data_of_blob(key_data)
            return True
        login = self._verdicts.get((username, key_data))
        if login is None:
            return False
        if login.lineage is not None and login.lineage.superseded:
            # Proven possession of a replaced certificate: a copy is in use.
            reason = await self._services.executors.run_db(
                self._services.machine_credentials.lock_copied_credential, login.nhi.name,
                login.certificate, login.lineage, source=self._source,
            )  # fmt: skip
            self._note_refusal("publickey-certificate", login.certificate.key_fingerprint, reason)
            return False
        self._login = login
        return True

    # -- after authentication --------------------------------------------------

    def connection_lost(self, exc: Exception | None) -> None:
        log_disconnect(
            self._lane.name, self._source, exc, signed_in=self._login_recorded is not None
        )
        if self._login_recorded is not None or not self._login_name:
            return
        # One event per refused connection: clients offer several keys in turn,
        # so a successful login routinely follows refusals that mean nothing.
        certificate_reasons = [
            r["reason"] for r in self._refusals if r["method"] == "publickey-certificate"
        ]
        reasons = certificate_reasons or [r["reason"] for r in self._refusals]
        self._lane.record_soon(self._event(
            "auth.refused", "refused", actor=user_part(self._login_name)[:64],
            reason=reasons[0] if reasons else "no certificate offered",
            login=self._login_name[:200], attempts=self._refusals,
        ))  # fmt: skip

    def auth_completed(self) -> None:
        # Sessions wait for this record: no access without an audit record.
        loop = asyncio.get_running_loop()
        if self._login is not None and self._login_name != JOIN_USER:
            self._login_recorded = loop.create_task(self._record_login(self._login))
            return
        self._login_recorded = loop.create_future()
        joining = self._login is None and self._join_key is not None
        self._login_recorded.set_result(joining and self._login_name == JOIN_USER)

    async def _record_login(self, login: MachineLogin) -> bool:
        try:
            await self._services.executors.run_db(
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
        refused = too_many_sessions(self._conn, self._lane.settings.max_sessions)
        if refused:
            self.refuse_channel("session", why=refused)
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, refused)
        session: MachineSession | JoinExchange
        if self._login is not None and self._login_name != JOIN_USER:
            session = MachineSession(
                self._lane, self._login, self._login_name, self._source, recorded
            )
        elif self._join_key is not None and self._login_name == JOIN_USER:
            if self._join_started:
                return False  # one exchange per connection
            self._join_started = True
            session = JoinExchange(self._lane, self._join_key, self._source)
        else:
            return False
        self._lane.sessions.add(session)
        return SessionChannel(self._lane, session)

    def refuse_channel(self, kind: str, reason: str = FORWARDING_REFUSED, **details: str) -> None:
        actor = self._login.nhi.name if self._login else user_part(self._login_name)[:64]
        self._lane.record_soon(self._event(
            "channel.refused", "refused", actor=actor, reason=reason, kind=kind, **details,
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

    name = "machine"
    connection_class = MachineLaneConnection
    key_rules = MACHINE_LANE_KEYS

    @property
    def settings(self) -> ListenerSettings:
        return self.services.config.listeners.machine

    @property
    def host_key_path(self) -> Path:
        return self.services.data.machine_host_key

    def new_server(self) -> MachineLaneServer:
        return MachineLaneServer(self)
