"""Signing a person in outside SSH: the approver CLI and the console.

The same two factors as an SSH login (password, then TOTP code), the same
lockout counters, and the same audit events, so a console or CLI cannot be
used to guess passwords any faster than the human lane. The code is checked
only after the password, so a wrong password never burns a code; either
failure gives the same message.
"""

from __future__ import annotations

import time

from gateway.domain.audit.trail import ActorType, AuditEvent, AuditLog, Trail
from gateway.domain.identities import UserDirectory, UserView
from gateway.domain.lockout import FailureLimiter
from gateway.errors import PamgateError


class SignInFailed(PamgateError):
    """Wrong password or code, unknown or disabled user, or locked out (one message for all)."""


class PersonSignIn:
    """Checks a person's password and TOTP code, with lockout and audit."""

    def __init__(self, users: UserDirectory, limiter: FailureLimiter, audit: AuditLog) -> None:
        self._users = users
        self._limiter = limiter
        self._audit = audit

    def sign_in(
        self, name: str, password: str, code: str, *, source: str, purpose: str
    ) -> UserView:
        """The user, if both factors are right; SignInFailed (after the usual delay) if not.

        ``source`` names where the attempt came from (``console:HOST``,
        ``cli:USER@HOST``); ``purpose`` is kept in the audit event.
        """
        lock = self._limiter.state(name, source)
        password_ok = not lock.locked and self._users.verify_password(name, password)
        code_ok = password_ok and self._users.verify_totp(name, code)
        user = self._users.get(name) if code_ok else None
        if user is None or user.disabled:
            outcome = self._limiter.record_failure(name, source)
            reason = "locked out" if lock.locked else "wrong password or code"
            self._audit.record(Trail.HUMAN, AuditEvent(
                actor=name[:64], actor_type=ActorType.HUMAN, action="auth.failure",
                outcome="failure", source=source, reason=reason,
                details={"factor": "password+totp", "purpose": purpose},
            ))  # fmt: skip
            time.sleep(outcome.delay_seconds)
            raise SignInFailed(f"authentication as {name} failed")
        self._limiter.record_success(name)
        self._audit.record(Trail.HUMAN, AuditEvent(
            actor=name, actor_type=ActorType.HUMAN, action="auth.success", source=source,
            details={"method": "password+totp", "purpose": purpose},
        ))  # fmt: skip
        return user
