"""The human lane: the SSH server admins log in to, with two factors every time.

Authentication, as the stock OpenSSH client sees it:

1. ``keyboard-interactive`` with the prompts ``Password:`` then
   ``Verification code:`` (TOTP); or
2. ``publickey`` with a registered key, answered with *partial success*,
   then ``keyboard-interactive`` asking only ``Verification code:``, as
   OpenSSH's ``AuthenticationMethods publickey,keyboard-interactive`` does.

Plain ``password`` auth is not offered: it cannot carry the second factor.
The verification code is asked for even after a wrong password, so a client
cannot tell which factor failed. Checking the factors, counting failures,
lockouts and the audit events are the sign-in service's
(:mod:`gateway.domain.sign_in`, shared with the console and the CLI); this
module speaks the protocol and answers a failure no sooner than the delay
the service asks for, whether or not the user exists.

Local port forwarding goes to the destinations the rule lists
(:mod:`gateway.ssh.human.forwarding`); remote, agent and X11 forwarding are
refused. Both are audited, as are refused channels.
"""

from __future__ import annotations

import asyncio
import math
import time
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
from gateway.ssh.channel import SessionChannel
from gateway.ssh.human.forwarding import LocalForward
from gateway.ssh.human.session import HumanSession
from gateway.ssh.lane import FORWARDING_REFUSED, Lane, RefusesAgentAndX11, RefusesForwarding
from gateway.ssh.partial_auth import MultiFactorServer, PartialSuccessServerConnection
from gateway.ssh.user_keys import AuditsRefusedKeys, ChecksUserKeys, RefusesCertificates

PASSWORD_PROMPT = "Password: "
CODE_PROMPT = "Verification code: "
KBDINT = "keyboard-interactive"
#: Failed keyboard-interactive attempts allowed on one connection.
MAX_ATTEMPTS_PER_CONNECTION = 3
#: Refused keys audited per connection (gateway.ssh.user_keys).
MAX_KEYS_AUDITED = 16


class HumanLaneConnection(  # type: ignore[misc]
    ChecksUserKeys, RefusesCertificates, RefusesAgentAndX11, PartialSuccessServerConnection
):
    """Server connection with partial success that refuses agent and X11 forwarding,
    certificates, and keys or signatures sshd would refuse (gateway.ssh.user_keys)."""


class HumanLaneServer(AuditsRefusedKeys, RefusesForwarding, MultiFactorServer):
    """One client connection on the human lane: authentication and session admission."""

    def __init__(self, lane: HumanLane) -> None:
        self._lane = lane
        self._services = lane.services
        self._conn: asyncssh.SSHServerConnection | None = None
        self._source = "unknown"
        self._login_name = ""
        self._user = ""
        self._key_passed = False
        self._key_fingerprint = ""
        self._stage = "password"
        self._password_ok = False
        self._attempt_started = 0.0
        self._failures = 0
        self._authenticated: UserView | None = None
        #: (key fingerprint, reason) of keys refused and audited on this connection.
        self._keys_refused: set[tuple[str, str]] = set()

    # -- connection ------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername")
        if peer:
            self._source = str(peer[0])

    def begin_auth(self, username: str) -> bool:
        # A new user name restarts authentication from the first factor.
        self._login_name = username
        self._user = user_part(username)
        self._key_passed = False
        self._stage = "password"
        return True

    # -- factor 1a: registered public key ---------------------------------

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        key_data = openssh_key_data(key)
        matched = await asyncio.to_thread(self._services.sign_in.check_key, self._user, key_data)
        if matched:
            self._key_fingerprint = key.get_fingerprint()
        return matched

    # -- factor 1b and 2: keyboard-interactive ------------------------------

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return True

    def get_kbdint_challenge(self, username: str, lang: str, submethods: str) -> KbdIntChallenge:
        self._attempt_started = time.monotonic()
        self._password_ok = False
        if self._key_passed:
            self._stage = "code"
            return ("", "", "", [(CODE_PROMPT, False)])
        self._stage = "password"
        return ("", "", "", [(PASSWORD_PROMPT, False)])

    async def validate_kbdint_response(
        self, username: str, responses: KbdIntResponse
    ) -> KbdIntChallenge:
        answer = responses[0] if len(responses) == 1 else ""
        if self._stage == "password":
            self._password_ok = await asyncio.to_thread(
                self._services.sign_in.check_password, self._user, answer
            )
            self._stage = "code"
            return ("", "", "", [(CODE_PROMPT, False)])
        return await self._finish_login(answer)

    async def _finish_login(self, code: str) -> bool:
        """Settle the attempt through the one sign-in service; answer a failure after its delay."""
        details = {"key": self._key_fingerprint} if self._key_fingerprint else {}
        result = await asyncio.to_thread(
            self._services.sign_in.complete, self._user,
            first_factor="publickey" if self._key_passed else "password",
            first_factor_ok=self._key_passed or self._password_ok, code=code,
            source=self._source, details=details,
        )  # fmt: skip
        if result.user is not None:
            self._authenticated = result.user
            return True
        remaining = result.delay_seconds - (time.monotonic() - self._attempt_started)
        if remaining > 0:
            await asyncio.sleep(remaining)
        if result.locked and self._conn is not None:
            self._conn.send_auth_banner(
                "pamgate: too many failed logins for this user or address; "
                f"try again in {math.ceil(result.retry_after_seconds)} s.\n"
            )
        self._stage = "password"
        self._failures += 1
        if self._failures >= MAX_ATTEMPTS_PER_CONNECTION and self._conn is not None:
            conn = self._conn
            asyncio.get_running_loop().call_soon(
                lambda: conn.disconnect(
                    asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "too many failed attempts"
                )
            )
        return False

    # -- partial success (see gateway.ssh.partial_auth) -----------------------

    def method_succeeded(self, method: str) -> bool:
        if method == "publickey":
            self._key_passed = True
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
    login_timeout = 60
    key_rules = HUMAN_LANE_KEYS

    @property
    def settings(self) -> ListenerSettings:
        return self.services.config.listeners.human

    @property
    def host_key_path(self) -> Path:
        return self.services.data.human_host_key

    def new_server(self) -> HumanLaneServer:
        return HumanLaneServer(self)
