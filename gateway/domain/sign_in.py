"""Signing a person in: the one place for the SSH lane, the console and the CLI.

Two factors every time: a password or a registered key, then a TOTP code.
Whoever asks gets the same lockout accounting (per user name and per source
address, :mod:`gateway.domain.lockout`) and the same audit events:
``auth.success``, ``auth.failure`` with the precise reason, and
``auth.lockout`` when a failure locks a counter. A success that cannot be
audited is a failure (fail closed).

The SSH lane asks in two steps, as the protocol does (:meth:`SignIn.check_password`
or :meth:`SignIn.check_key`, then :meth:`SignIn.complete`); the console and the
CLI ask once (:meth:`SignIn.sign_in`). The code is checked only after the
first factor passed, so a wrong password never burns a code; the person is
told only that the sign-in failed, never which factor.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from gateway.domain.audit.trail import ActorType, AuditEvent, AuditLog, Trail
from gateway.domain.identities import UserDirectory, UserView
from gateway.domain.lockout import FailureLimiter, LockState
from gateway.errors import PamgateError, StoreError

logger = logging.getLogger("pamgate.sign_in")


class SignInFailed(PamgateError):
    """Wrong password or code, unknown or disabled user, or locked out (one message for all)."""


@dataclass(frozen=True)
class SignInResult:
    """The outcome of one sign-in attempt."""

    #: The person, when both factors passed and the success was audited.
    user: UserView | None
    #: Why it failed, for the audit trail only (never for the person).
    reason: str = ""
    #: The least time the failed attempt should take before it is answered.
    delay_seconds: float = 0.0
    #: True when a lockout is in force for this user name or address.
    locked: bool = False
    #: Seconds until the lockout ends (when ``locked``).
    retry_after_seconds: float = 0.0
    #: Counters that this failure locked (``user``, ``source``).
    new_lockouts: tuple[str, ...] = field(default=())


class SignIn:
    """Checks a person's two factors, with lockout and audit (see the module docstring)."""

    def __init__(
        self, users: UserDirectory, limiter: FailureLimiter, audit: AuditLog, lockout_seconds: int
    ) -> None:
        self._users = users
        self._limiter = limiter
        self._audit = audit
        self._lockout_seconds = lockout_seconds

    # -- first factor ------------------------------------------------------

    def check_password(self, name: str, password: str) -> bool:
        """True if ``name`` is an enabled user with this password (one argon2 check either way).

        Not counted on its own: the attempt is counted when :meth:`complete` settles it.
        """
        return self._users.verify_password(name, password)

    def check_key(self, name: str, key_data: str) -> bool:
        """True if ``key_data`` (``TYPE BASE64``) is registered for the enabled user ``name``."""
        return self._users.key_is_registered(name, key_data)

    # -- second factor: the attempt is settled here ------------------------

    def complete(
        self,
        name: str,
        *,
        first_factor: str,
        first_factor_ok: bool,
        code: str,
        source: str,
        purpose: str = "ssh",
        details: dict[str, str] | None = None,
    ) -> SignInResult:
        """Check the TOTP code after the first factor and settle the attempt.

        ``first_factor`` is ``password`` or ``publickey``; ``source`` names
        where the attempt came from (an address, ``console:HOST``,
        ``cli:USER@HOST``); ``purpose`` and ``details`` go into the audit
        events. The caller applies :attr:`SignInResult.delay_seconds` before
        answering a failure.
        """
        lock = self._limiter.state(name, source)
        account = self._users.get(name)
        code_ok = False
        if first_factor_ok and not lock.locked:
            code_ok = self._users.verify_totp(name, code)
        method = f"{first_factor}+totp"
        extra = {"purpose": purpose} if purpose != "ssh" else {}
        if first_factor_ok and code_ok and not lock.locked and account and not account.disabled:
            self._limiter.record_success(name)
            event = self._event(
                name, "auth.success", "success", source, method=method, factor="totp",
                **extra, **(details or {}),
            )  # fmt: skip
            try:
                self._audit.record(Trail.HUMAN, event)
            except StoreError:
                logger.exception("the sign-in of %s could not be audited", name)
                return self._fail(name, source, "totp", "the login could not be audited", lock,
                                  purpose=purpose)  # fmt: skip
            return SignInResult(account)
        if lock.locked:
            factor, reason = first_factor, f"locked out ({lock.scope})"
        elif account is None:
            factor, reason = first_factor, "unknown user"
        elif account.disabled:
            factor, reason = first_factor, "user disabled"
        elif not first_factor_ok:
            factor, reason = first_factor, f"wrong {first_factor}"
        else:
            factor, reason = "totp", "wrong or reused verification code"
        return self._fail(name, source, factor, reason, lock, purpose=purpose)

    # -- both at once: the console and the CLI -------------------------------

    def sign_in(
        self, name: str, password: str, code: str, *, source: str, purpose: str
    ) -> UserView:
        """The user, if both factors are right; SignInFailed after the failure delay if not."""
        lock = self._limiter.state(name, source)
        password_ok = not lock.locked and self.check_password(name, password)
        result = self.complete(
            name, first_factor="password", first_factor_ok=password_ok, code=code,
            source=source, purpose=purpose,
        )  # fmt: skip
        if result.user is None:
            time.sleep(result.delay_seconds)
            raise SignInFailed(f"authentication as {name} failed")
        return result.user

    # -- internals -----------------------------------------------------------

    def _fail(
        self, name: str, source: str, factor: str, reason: str, lock: LockState, *, purpose: str
    ) -> SignInResult:
        locked, retry_after = lock.locked, lock.retry_after_seconds
        outcome = self._limiter.record_failure(name, source)
        extra = {"purpose": purpose} if purpose != "ssh" else {}
        self._record(self._event(name, "auth.failure", "failure", source, reason=reason,
                                 factor=factor, **extra))  # fmt: skip
        for scope in outcome.new_lockouts:
            self._record(self._event(name, "auth.lockout", "failure", source,
                                     reason=f"too many failures ({scope})", scope=scope,
                                     **extra))  # fmt: skip
        if outcome.new_lockouts and not locked:
            locked, retry_after = True, float(self._lockout_seconds)
        return SignInResult(
            None, reason, outcome.delay_seconds, locked, retry_after, outcome.new_lockouts
        )

    def _record(self, event: AuditEvent) -> None:
        # Refusing either way: a failed write of a failure is logged, not raised.
        try:
            self._audit.record(Trail.HUMAN, event)
        except StoreError:
            logger.exception("audit write failed for %s", event.action)

    @staticmethod
    def _event(
        name: str, action: str, outcome: str, source: str, *, reason: str = "", **details: object
    ) -> AuditEvent:
        return AuditEvent(
            actor=name[:64], actor_type=ActorType.HUMAN, action=action, outcome=outcome,
            source=source, reason=reason, details=details,
        )  # fmt: skip
