"""The human lane: the SSH server admins log in to, with two factors every time.

Authentication, as the stock OpenSSH client sees it:

1. ``keyboard-interactive`` with the prompts ``Password:`` then
   ``Verification code:`` (TOTP); or
2. ``publickey`` with a registered key, answered with *partial success*,
   then ``keyboard-interactive`` asking only ``Verification code:``, as
   OpenSSH's ``AuthenticationMethods publickey,keyboard-interactive`` does.

Plain ``password`` auth is not offered: it cannot carry the second factor.
The verification code is asked for even after a wrong password, so a client
cannot tell which factor failed. Failed attempts are counted per user name
and per source address (:mod:`gateway.domain.lockout`) and answered no sooner than
the configured delay, whether or not the user exists.

Every outcome goes to the human audit trail: successes, failures (with the
factor), lockouts and refused channels. A login whose success cannot be
audited is refused (fail closed).

Local port forwarding goes to the destinations the rule lists (:mod:`gateway.ssh.human.forwarding`);
remote, agent and X11 forwarding are refused. Both are audited.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from pathlib import Path

import asyncssh

from gateway.config import ListenerSettings
from gateway.crypto.certificates import openssh_key_data
from gateway.domain.access import user_part
from gateway.domain.audit.trail import ActorType, AuditEvent, Trail
from gateway.domain.identities import UserView
from gateway.ssh.human.forwarding import LocalForward
from gateway.ssh.human.session import HumanSession, SessionContext
from gateway.ssh.lane import FORWARDING_REFUSED, Lane, RefusesAgentAndX11, RefusesForwarding
from gateway.ssh.partial_auth import MultiFactorServer, PartialSuccessServerConnection

PASSWORD_PROMPT = "Password: "
CODE_PROMPT = "Verification code: "
KBDINT = "keyboard-interactive"
#: Failed keyboard-interactive attempts allowed on one connection.
MAX_ATTEMPTS_PER_CONNECTION = 3


class HumanLaneConnection(RefusesAgentAndX11, PartialSuccessServerConnection):  # type: ignore[misc]
    """Server connection with partial success that refuses agent and X11 forwarding."""


class HumanLaneServer(RefusesForwarding, MultiFactorServer):
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
        matched = await asyncio.to_thread(
            self._services.users.key_is_registered, self._user, key_data
        )
        if matched:
            self._key_fingerprint = key.get_fingerprint()
        return matched

    # -- factor 1b and 2: keyboard-interactive ------------------------------

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return True

    def get_kbdint_challenge(
        self, username: str, lang: str, submethods: str
    ) -> asyncssh.KbdIntChallenge:
        self._attempt_started = time.monotonic()
        self._password_ok = False
        if self._key_passed:
            self._stage = "code"
            return ("", "", "", [(CODE_PROMPT, False)])
        self._stage = "password"
        return ("", "", "", [(PASSWORD_PROMPT, False)])

    async def validate_kbdint_response(
        self, username: str, responses: asyncssh.KbdIntResponse
    ) -> asyncssh.KbdIntChallenge:
        answer = responses[0] if len(responses) == 1 else ""
        if self._stage == "password":
            self._password_ok = await asyncio.to_thread(
                self._services.users.verify_password, self._user, answer
            )
            self._stage = "code"
            return ("", "", "", [(CODE_PROMPT, False)])
        return await self._finish_login(answer)

    async def _finish_login(self, code: str) -> bool:
        services = self._services
        first_factor = "publickey" if self._key_passed else "password"
        lock = await asyncio.to_thread(services.limiter.state, self._user, self._source)
        account = await asyncio.to_thread(services.users.get, self._user)
        first_ok = self._key_passed or self._password_ok
        code_ok = False
        if first_ok and not lock.locked:
            code_ok = await asyncio.to_thread(services.users.verify_totp, self._user, code)
        if first_ok and code_ok and not lock.locked and account and not account.disabled:
            await asyncio.to_thread(services.limiter.record_success, self._user)
            details = {"method": f"{first_factor}+totp", "factor": "totp"}
            if self._key_fingerprint:
                details["key"] = self._key_fingerprint
            if await self._audit("auth.success", "success", **details):
                self._authenticated = account
                return True
            await self._fail("totp", "the login could not be audited", False, 0.0)
            return False
        # The precise reason is for the audit trail only; the client learns nothing.
        if lock.locked:
            factor, reason = first_factor, f"locked out ({lock.scope})"
        elif account is None:
            factor, reason = first_factor, "unknown user"
        elif account.disabled:
            factor, reason = first_factor, "user disabled"
        elif not first_ok:
            factor, reason = first_factor, f"wrong {first_factor}"
        else:
            factor, reason = "totp", "wrong or reused verification code"
        await self._fail(factor, reason, lock.locked, lock.retry_after_seconds)
        return False

    async def _fail(self, factor: str, reason: str, locked: bool, retry_after: float) -> None:
        services = self._services
        outcome = await asyncio.to_thread(services.limiter.record_failure, self._user, self._source)
        await self._audit("auth.failure", "failure", reason=reason, factor=factor)
        for scope in outcome.new_lockouts:
            await self._audit(
                "auth.lockout", "failure", reason=f"too many failures ({scope})", scope=scope
            )
        if outcome.new_lockouts and not locked:
            locked, retry_after = True, float(services.config.auth.lockout_seconds)
        remaining = outcome.delay_seconds - (time.monotonic() - self._attempt_started)
        if remaining > 0:
            await asyncio.sleep(remaining)
        if locked and self._conn is not None:
            self._conn.send_auth_banner(
                "pamgate: too many failed logins for this user or address; "
                f"try again in {math.ceil(retry_after)} s.\n"
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
        context = SessionContext(self._authenticated, self._login_name, self._source)
        session = HumanSession(context, self._lane)
        self._lane.sessions.add(session)
        return session

    def local_forward(self) -> LocalForward | None:
        if self._authenticated is None:
            return None
        return LocalForward(self._lane, self._authenticated, self._login_name, self._source)

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

    async def _audit(
        self, action: str, outcome: str, *, reason: str = "", **details: object
    ) -> bool:
        """Append to the human trail; False if that failed (the caller fails closed)."""
        return await self._lane.record(self._event(action, outcome, reason=reason, **details))


class HumanLane(Lane):
    """The human lane's listener and its running session tasks."""

    trail = Trail.HUMAN

    name = "human"
    connection_class = HumanLaneConnection
    login_timeout = 60

    @property
    def settings(self) -> ListenerSettings:
        return self.services.config.listeners.human

    @property
    def host_key_path(self) -> Path:
        return self.services.data.human_host_key

    def new_server(self) -> HumanLaneServer:
        return HumanLaneServer(self)
