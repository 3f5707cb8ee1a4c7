"""The human lane: the SSH server admins log in to, with two factors every time.

Authentication, as the stock OpenSSH client sees it:

1. ``keyboard-interactive`` with the prompts ``Password:`` then
   ``Verification code:`` (TOTP); or
2. ``publickey`` with a registered key, answered with *partial success*,
   then ``keyboard-interactive`` asking only ``Verification code:``, as
   OpenSSH's ``AuthenticationMethods publickey,keyboard-interactive`` does.

Plain ``password`` auth is not offered: it cannot carry the second factor.
The verification code is asked for even after a wrong password, so a client
cannot tell which factor failed. Checking the factors, counting every
attempt (abandoned and restarted ones too), throttling and the audit events
are the sign-in service's (:mod:`gateway.domain.sign_in`, shared with the
console and the CLI); this module speaks the protocol and sends no prompt
or refusal sooner than the delay the service asks for, whether or not the
user exists. Connection limits (``max_startups``, ``max_sessions``) are
:mod:`gateway.ssh.server_connection`'s and the lane's.

Local port forwarding goes to the destinations the rule lists
(:mod:`gateway.ssh.human.forwarding`); remote, agent and X11 forwarding are
refused. Both are audited, as are refused channels.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from pathlib import Path

import asyncssh
from asyncssh.auth import KbdIntChallenge, KbdIntResponse

from gateway.config import ListenerSettings
from gateway.crypto.algorithms import HUMAN_LANE_KEYS, UserKeyRules
from gateway.crypto.certificates import (
    CertificateMalformed,
    fingerprint_of_blob,
    openssh_key_data,
    parse_certificate,
)
from gateway.domain.access import user_part
from gateway.domain.audit.trail import ActorType, AuditEvent, Trail
from gateway.domain.identities import UserView
from gateway.domain.sign_in import RESTARTED, ConnectionSignIn
from gateway.ssh.channel import SessionChannel
from gateway.ssh.human.forwarding import LocalForward
from gateway.ssh.human.session import HumanSession
from gateway.ssh.lane import (
    FORWARDING_REFUSED,
    Lane,
    RefusesAgentAndX11,
    RefusesForwarding,
    too_many_sessions,
)
from gateway.ssh.partial_auth import MultiFactorServer, PartialSuccessServerConnection
from gateway.ssh.server_connection import LaneServerConnection, describe_disconnect, log_disconnect
from gateway.ssh.user_keys import AuditsRefusedKeys, ChecksUserKeys, RefusesCertificates

PASSWORD_PROMPT = "Password: "
CODE_PROMPT = "Verification code: "
KBDINT = "keyboard-interactive"
#: Distinct public keys looked up on one connection; later ones are refused unchecked
#: (an agent offers each key it holds; sshd's MaxAuthTries is 6).
MAX_KEYS_PER_CONNECTION = 10
#: Refused keys audited per connection (gateway.ssh.user_keys).
MAX_KEYS_AUDITED = 16


class HumanLaneConnection(  # type: ignore[misc]
    ChecksUserKeys,
    RefusesCertificates,
    RefusesAgentAndX11,
    PartialSuccessServerConnection,
    LaneServerConnection,
):
    """Server connection with partial success and the lanes' limits that refuses agent and
    X11 forwarding, certificates, and keys or signatures sshd would refuse
    (gateway.ssh.user_keys)."""


class HumanLaneServer(AuditsRefusedKeys, RefusesForwarding, MultiFactorServer):
    """One client connection on the human lane: authentication and session admission.

    Every step of a sign-in goes to the connection's
    :class:`~gateway.domain.sign_in.ConnectionSignIn`, which counts, settles
    and audits it; this class turns protocol events into those calls and
    waits the delay it is told before each prompt or refusal.
    """

    def __init__(self, lane: HumanLane) -> None:
        self._lane = lane
        self._services = lane.services
        self._conn: asyncssh.SSHServerConnection | None = None
        self._source = "unknown"
        self._login_name = ""
        self._user = ""
        self._key_passed = False
        self._key_fingerprint = ""
        self._keys_checked: set[str] = set()
        #: How far a connection that never made an attempt got (for its audit event).
        self._reached = "none"
        self._attempts: ConnectionSignIn | None = None
        self._authenticated: UserView | None = None
        #: (key fingerprint, reason) of keys refused and audited on this connection.
        self._keys_refused: set[tuple[str, str]] = set()
        #: Why the gateway itself closed the connection, if it did.
        self._hung_up = ""

    # -- connection ------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername")
        if peer:
            self._source = str(peer[0])
        self._attempts = self._services.sign_in.over_connection(self._source)

    def connection_lost(self, exc: Exception | None) -> None:
        signed_in = self._authenticated is not None
        log_disconnect(self._lane.name, self._source, exc, signed_in=signed_in)
        if signed_in or self._attempts is None:
            return
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(
            self._attempts.closed, self._hung_up or describe_disconnect(exc),
            began_auth=bool(self._login_name),
            name=self._user, reached=self._reached,
        ))  # fmt: skip
        self._lane.track_task(task)

    def begin_auth(self, username: str) -> bool:
        # A new user name restarts authentication from the first factor; an open
        # attempt under the old name is settled when the next one begins.
        self._login_name = username
        self._user = user_part(username)
        self._key_passed = False
        self._key_fingerprint = ""
        return True

    # -- factor 1a: registered public key ---------------------------------

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        key_data = openssh_key_data(key)
        new_key = key_data not in self._keys_checked
        if new_key and len(self._keys_checked) >= MAX_KEYS_PER_CONNECTION:
            return False
        self._keys_checked.add(key_data)
        self._reached = "publickey offered"
        matched = await asyncio.to_thread(self._services.sign_in.check_key, self._user, key_data)
        if matched:
            self._key_fingerprint = key.get_fingerprint()
        return matched

    # -- factor 1b and 2: keyboard-interactive ------------------------------

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return True

    async def get_kbdint_challenge(
        self, username: str, lang: str, submethods: str
    ) -> KbdIntChallenge:
        attempts = self._attempts
        assert attempts is not None
        self._reached = "keyboard-interactive"
        factor = "publickey" if self._key_passed else "password"
        details = {"key": self._key_fingerprint} if self._key_passed else {}
        # A client that restarts instead of answering gets the same failure delay as one
        # that answers wrongly: the open attempt is settled, then the wait, then a new one.
        await asyncio.to_thread(attempts.settle_open, RESTARTED)
        await asyncio.sleep(attempts.wait_seconds())
        allowed = await asyncio.to_thread(attempts.begin, self._user, factor, details)
        if not allowed:
            self._disconnect("too many failed attempts")
            return False
        if self._key_passed:
            return ("", "", "", [(CODE_PROMPT, False)])
        return ("", "", "", [(PASSWORD_PROMPT, False)])

    async def validate_kbdint_response(
        self, username: str, responses: KbdIntResponse
    ) -> KbdIntChallenge:
        attempts = self._attempts
        assert attempts is not None
        # Any number of answers, in any script, of any length: the sign-in service
        # refuses what is not one well-formed answer like a wrong one.
        answer = responses[0] if len(responses) == 1 else None
        if attempts.expecting == "password":
            check = await asyncio.to_thread(attempts.answer_password, answer)
            # Checks queue by priority (PasswordChecks); a restart cancels this wait and drops
            # a check not started yet (the attempt is counted either way).
            await asyncio.wrap_future(check)
            return ("", "", "", [(CODE_PROMPT, False)])
        return await self._finish_login(attempts, answer)

    async def _finish_login(self, attempts: ConnectionSignIn, code: str | None) -> bool:
        """Settle the attempt through the sign-in service; answer a failure after its delay."""
        result = await asyncio.to_thread(attempts.answer_code, code)
        if result.user is not None:
            self._authenticated = result.user
            return True
        await asyncio.sleep(attempts.wait_seconds())
        if result.blocked and self._conn is not None:
            self._conn.send_auth_banner(
                "pamgate: too many failed logins for this user or address; "
                f"try again in {math.ceil(result.retry_after_seconds)} s.\n"
            )
        if attempts.attempts_left == 0:
            self._disconnect("too many failed attempts")
        return False

    def _disconnect(self, reason: str) -> None:
        self._hung_up = f"the gateway hung up: {reason}"
        conn = self._conn
        if conn is not None:
            asyncio.get_running_loop().call_soon(
                lambda: conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, reason)
            )

    # -- partial success (see gateway.ssh.partial_auth) -----------------------

    def method_succeeded(self, method: str) -> bool:
        if method == "publickey":
            self._key_passed = True
            self._reached = "publickey accepted"
            self._lane.record_soon(
                self._event("auth.factor", "success", factor="publickey", key=self._key_fingerprint)
            )
            return False
        return self._authenticated is not None

    def methods_remaining(self) -> Sequence[str] | None:
        return [KBDINT] if self._key_passed else None

    # -- channels ---------------------------------------------------------

    def session_requested(self) -> asyncssh.SSHServerSession[bytes] | bool:
        if self._authenticated is None:
            return False
        refused = too_many_sessions(self._conn, self._lane.settings.max_sessions)
        if refused:
            self.refuse_channel("session", why=refused)
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, refused)
        session = HumanSession(self._lane, self._authenticated, self._login_name, self._source)
        self._lane.sessions.add(session)
        return SessionChannel(self._lane, session)

    def local_forward(self) -> LocalForward | None:
        if self._authenticated is None:
            return None
        return LocalForward(self._lane, self._authenticated, self._login_name, self._source)

    # -- keys refused before any factor counts (gateway.ssh.user_keys) --------

    @property
    def key_rules(self) -> UserKeyRules:
        return self._lane.key_rules

    def key_refused(self, username: str, key_data: bytes, reason: str) -> None:
        fingerprint = fingerprint_of_blob(key_data)
        # One event per key and reason; a client cycling through keys cannot flood the trail.
        refused = self._keys_refused
        if (fingerprint, reason) not in refused and len(refused) < MAX_KEYS_AUDITED:
            self._keys_refused.add((fingerprint, reason))
            self._lane.record_soon(self._event(
                "auth.refused", "refused", reason=reason, method="publickey", key=fingerprint,
                login=username[:200],
            ))  # fmt: skip

    def certificate_offered(self, username: str, key_data: bytes) -> None:
        reason = "certificates are not accepted on the human lane: use a registered key"
        try:
            signer = parse_certificate(key_data).signing_key
        except CertificateMalformed:
            signer = None
        if signer == self._services.machine_ca.public_key_data():
            reason = "a machine certificate (machine CA) cannot log in on the human lane"
        self.key_refused(username, key_data, reason)

    def refuse_channel(self, kind: str, **details: str) -> None:
        """Audit a refused channel or forwarding request."""
        self._lane.record_soon(
            self._event(
                "channel.refused", "refused", reason=FORWARDING_REFUSED, kind=kind, **details
            )
        )

    # -- audit ------------------------------------------------------------

    def _event(
        self, action: str, outcome: str, *, reason: str = "", **details: object
    ) -> AuditEvent:
        return AuditEvent(
            actor=self._user,
            actor_type=ActorType.HUMAN,
            action=action,
            outcome=outcome,
            source=self._source,
            reason=reason,
            details=details,
        )


class HumanLane(Lane):
    """The human lane's listener and its running session tasks."""

    trail = Trail.HUMAN

    name = "human"
    connection_class = HumanLaneConnection
    key_rules = HUMAN_LANE_KEYS

    @property
    def settings(self) -> ListenerSettings:
        return self.services.config.listeners.human

    @property
    def host_key_path(self) -> Path:
        return self.services.data.human_host_key

    def new_server(self) -> HumanLaneServer:
        return HumanLaneServer(self)
