"""The human lane: the SSH server admins log in to, with two factors every time.

Authentication, as the stock OpenSSH client sees it:

1. ``keyboard-interactive`` with the prompts ``Password:`` then
   ``Verification code:`` (TOTP); or
2. ``publickey`` with a registered key, answered with *partial success*,
   then ``keyboard-interactive`` asking only ``Verification code:``, as
   OpenSSH's ``AuthenticationMethods publickey,keyboard-interactive`` does;
3. ``publickey`` with a login certificate from ``pamgate-login``
   (:mod:`gateway.domain.login_certificates`): both factors at once, unless
   the login names a target under a ``fresh_mfa`` rule; then partial success
   and ``Verification code:`` as for a registered key. Any other certificate
   is refused and audited with the reason.

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
from datetime import UTC, datetime
from pathlib import Path

import asyncssh
from asyncssh.auth import KbdIntChallenge, KbdIntResponse

from gateway.config import ListenerSettings
from gateway.crypto.algorithms import HUMAN_LANE_KEYS, UserKeyRules
from gateway.crypto.certificates import (
    fingerprint_of_blob,
    is_certificate,
    openssh_key_data,
    parse_certificate,
)
from gateway.domain.access import parse_login_name, user_part
from gateway.domain.audit.trail import ActorType, AuditEvent, Trail
from gateway.domain.identities import UserView
from gateway.domain.login_certificates import CertificateLogin
from gateway.domain.sign_in import (
    LOGIN_CERT,
    RESTARTED,
    ConnectionSignIn,
    SignedIn,
    SignInResult,
    split_password_and_code,
)
from gateway.errors import PamgateError
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
from gateway.ssh.user_keys import AuditsRefusedKeys, ChecksUserKeys

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
    RefusesAgentAndX11,
    PartialSuccessServerConnection,
    LaneServerConnection,
):
    """Server connection with partial success and the lanes' limits that refuses agent and
    X11 forwarding, and keys or signatures sshd would refuse (gateway.ssh.user_keys), and
    takes login certificates only as :class:`HumanLaneServer` judges them.

    asyncssh's own certificate checks (signature, validity, principal,
    source-address) still run after the lane's.
    """

    async def validate_public_key(
        self, username: str, key_data: bytes, msg: bytes, signature: bytes
    ) -> bool:
        if not await super().validate_public_key(username, key_data, msg, signature):
            return False
        owner = self._owner
        if not msg or not is_certificate(key_data):
            return True  # a query proves nothing yet; plain keys are validate_public_key's
        # The signature verified: this client holds the certified key, for this user name.
        return isinstance(owner, HumanLaneServer) and await owner.certificate_proven(
            username, key_data
        )


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
        #: Verdicts on presented login certificates, per (user name, certificate).
        self._certificate_verdicts: dict[tuple[str, bytes], CertificateLogin | None] = {}
        #: The login certificate this client proved it holds (as the first factor, or both).
        self._certificate: CertificateLogin | None = None
        #: The rule that asks for a fresh code on top of the certificate, if one does.
        self._fresh_code_rule: str | None = None
        #: How the connection signed in, once it has.
        self._signed_in: SignedIn | None = None
        #: Whether the password prompt takes the password with the code appended.
        self._one_prompt = False

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
        task = asyncio.get_running_loop().create_task(self._services.executors.run_db(
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
        self._certificate = None
        self._fresh_code_rule = None
        return True

    # -- factor 1a and both factors: a login certificate ----------------------

    async def admit_certificate(self, username: str, key_data: bytes) -> bool:
        """Judge a presented certificate once per user name; refusals are audited."""
        verdict_key = (username, key_data)
        if verdict_key not in self._certificate_verdicts:
            if len(self._certificate_verdicts) >= MAX_KEYS_PER_CONNECTION:
                return False
            self._reached = "certificate offered"
            verdict = await self._services.executors.run_db(
                self._judge_certificate, username, key_data
            )
            if isinstance(verdict, str):
                self.key_refused(username, key_data, verdict)
            self._certificate_verdicts[verdict_key] = None if isinstance(verdict, str) else verdict
        return self._certificate_verdicts[verdict_key] is not None

    def _judge_certificate(self, username: str, key_data: bytes) -> CertificateLogin | str:
        """The accepted login certificate, or why it is refused (off the event loop)."""
        services = self._services
        try:
            certificate = parse_certificate(key_data)
            if certificate.signing_key == services.machine_ca.public_key_data():
                return "a machine certificate (machine CA) cannot log in on the human lane"
            return services.login_certificates.check(
                user_part(username), certificate, source=self._source
            )
        except PamgateError as exc:  # malformed, refused, or the store failed: refused
            return str(exc)

    def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        try:
            return openssh_key_data(key) == self._services.login_certificates.ca_key_data()
        except PamgateError:
            return False

    async def certificate_proven(self, username: str, key_data: bytes) -> bool:
        """The client signed with a certified key as ``username``: sign in with it, or take
        it as the first factor when a rule asks for a fresh code."""
        login = self._certificate_verdicts.get((username, key_data))
        if login is None:
            return False
        self._reached = "login certificate accepted"
        self._certificate = login
        try:
            self._fresh_code_rule = await self._services.executors.run_db(
                self._fresh_code_rule_for, username
            )
        except PamgateError:
            # The decision could not be asked: ask for the code rather than let the
            # certificate stand in for it (fail closed).
            self._fresh_code_rule = "unknown"
        if self._fresh_code_rule is not None:
            self._key_fingerprint = login.key_fingerprint
            return True  # the first factor: method_succeeded answers with partial success
        result = await self._services.executors.run_db(
            self._services.sign_in.sign_in_with_certificate, login, self._source
        )
        if result.user is None:
            self._certificate = None
            return False
        self._authenticated = result.user
        self._signed_in = SignedIn(result.user, LOGIN_CERT, login.mfa_at, login)
        return True

    def _fresh_code_rule_for(self, username: str) -> str | None:
        login = parse_login_name(username)
        if login.target is None:
            return None  # no target yet: the menu's choice is checked at admission
        return self._services.access.fresh_code_rule(
            login.user, login.target, login.account, source=self._source
        )

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
        matched = await self._services.executors.run_db(
            self._services.sign_in.check_key, self._user, key_data
        )
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
        if self._key_passed and self._certificate is not None:
            factor = LOGIN_CERT
            details["serial"] = str(self._certificate.serial)
            details["fresh_mfa_rule"] = self._fresh_code_rule or ""
        # A client that restarts instead of answering gets the same failure delay as one
        # that answers wrongly: the open attempt is settled, then the wait, then a new one.
        await self._services.executors.run_db(attempts.settle_open, RESTARTED)
        await asyncio.sleep(attempts.wait_seconds())
        allowed = await self._services.executors.run_db(attempts.begin, self._user, factor, details)
        if not allowed:
            self._disconnect("too many failed attempts")
            return False
        if not self._key_passed:
            self._one_prompt = await self._services.executors.run_db(
                self._accepts_password_with_code
            )
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
            combined = split_password_and_code(answer) if self._one_prompt else None
            if combined is not None:
                answer = combined[0]
            check = await self._services.executors.run_db(attempts.answer_password, answer)
            # Checks queue by priority (PasswordChecks); a restart cancels this wait and drops
            # a check not started yet (the attempt is counted either way).
            await asyncio.wrap_future(check)
            if combined is not None:
                result = await self._services.executors.run_db(
                    attempts.answer_code, combined[1], one_prompt=True
                )
                if result.user is not None or result.retry_code:
                    return await self._settled(attempts, result)
                # Failed: the code prompt still comes, as after any password, so the answer
                # says nothing about which part was wrong; answering it fails after the delay.
            return ("", "", "", [(CODE_PROMPT, False)])
        return await self._finish_login(attempts, answer)

    def _accepts_password_with_code(self) -> bool:
        try:
            login = parse_login_name(self._login_name)
        except PamgateError:
            return False
        return self._services.access.accepts_password_with_code(
            login.user, login.target, login.account, source=self._source
        )

    async def _finish_login(self, attempts: ConnectionSignIn, code: str | None) -> KbdIntChallenge:
        """Settle the attempt through the sign-in service; answer a failure after its delay.

        A right code that was already used gets the code prompt again, saying so."""
        result = await self._services.executors.run_db(attempts.answer_code, code)
        return await self._settled(attempts, result)

    async def _settled(self, attempts: ConnectionSignIn, result: SignInResult) -> KbdIntChallenge:
        """Answer the client after the code was checked: success, the code prompt again, or a
        failure after its delay."""
        if result.retry_code:
            return ("", result.reason, "", [(CODE_PROMPT, False)])
        if result.user is not None:
            self._authenticated = result.user
            certificate = self._certificate if self._key_passed else None
            if certificate is not None:
                method = f"{LOGIN_CERT}+totp"
            else:
                method = "publickey+totp" if self._key_passed else "password+totp"
            self._signed_in = SignedIn(result.user, method, datetime.now(UTC), certificate)
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
            if self._authenticated is not None:
                return True  # a login certificate: both factors
            self._key_passed = True
            self._reached = "publickey accepted"
            if self._certificate is not None:
                self._lane.record_soon(self._event(
                    "auth.factor", "success", factor=LOGIN_CERT, key=self._key_fingerprint,
                    serial=self._certificate.serial, fresh_mfa_rule=self._fresh_code_rule,
                ))  # fmt: skip
                return False
            self._lane.record_soon(
                self._event("auth.factor", "success", factor="publickey", key=self._key_fingerprint)
            )
            return False
        return self._authenticated is not None

    def methods_remaining(self) -> Sequence[str] | None:
        return [KBDINT] if self._key_passed else None

    # -- channels ---------------------------------------------------------

    def session_requested(self) -> asyncssh.SSHServerSession[bytes] | bool:
        signed_in = self._signed_in
        if self._authenticated is None or signed_in is None:
            return False
        refused = too_many_sessions(self._conn, self._lane.settings.max_sessions)
        if refused:
            self.refuse_channel("session", why=refused)
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, refused)
        session = HumanSession(self._lane, signed_in, self._login_name, self._source)
        self._lane.sessions.add(session)
        return SessionChannel(self._lane, session)

    def local_forward(self) -> LocalForward | None:
        if self._authenticated is None or self._signed_in is None:
            return None
        return LocalForward(self._lane, self._signed_in, self._login_name, self._source)

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
