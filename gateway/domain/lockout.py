"""Failed-login limits: lockout per user name and per source address, with backoff.

Counters live in the store, so they survive restarts and are shared by every
process using the same database. Unknown user names are counted exactly like
known ones: a lockout must not reveal whether a name exists.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.config import AuthSettings
from gateway.domain.audit.trail import ActorType, AuditEvent, AuditLog, Trail, admin_authority
from gateway.store.database import Store
from gateway.store.models import AuthFailureCounter

#: The failure delay grows with recent failures from a source up to this multiple.
MAX_DELAY_MULTIPLIER = 8


@dataclass(frozen=True)
class LockState:
    """Whether a login from this user/source is locked out, and for how long."""

    locked: bool
    retry_after_seconds: float
    #: ``user`` or ``source``: which counter is locked (for logs, never for the client).
    scope: str = ""


@dataclass(frozen=True)
class FailureOutcome:
    """What recording one failure did."""

    #: Counters that reached their limit with this failure (``user``, ``source``).
    new_lockouts: tuple[str, ...]
    #: Minimum time the failed attempt should take before it is answered.
    delay_seconds: float


class FailureLimiter:
    """Counts failed logins and decides lockouts and backoff delays."""

    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        settings: AuthSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._audit = audit
        self._settings = settings
        self._clock = clock

    def state(self, user: str, source: str) -> LockState:
        """The lock state for a login attempt by ``user`` from ``source``."""
        now = self._clock()
        with self._store.transaction(write=False) as db:
            for scope, key in (("user", _user_key(user)), ("source", _source_key(source))):
                row = db.get(AuthFailureCounter, key)
                if row is not None and row.locked_until > now:
                    return LockState(True, row.locked_until - now, scope)
        return LockState(False, 0.0)

    def record_failure(self, user: str, source: str) -> FailureOutcome:
        """Count one failed attempt against both the user name and the source."""
        now = self._clock()
        limits = (
            ("user", _user_key(user), self._settings.max_failures_per_user),
            ("source", _source_key(source), self._settings.max_failures_per_source),
        )
        new_lockouts = []
        source_failures = 0
        with self._store.transaction() as db:
            for scope, key, limit in limits:
                row = db.get(AuthFailureCounter, key, with_for_update=True)
                if row is None:
                    row = AuthFailureCounter(
                        key=key, failures=0, window_start=now, locked_until=0.0, lockouts=0
                    )
                    db.add(row)
                if now - row.window_start > self._settings.failure_window_seconds:
                    row.failures, row.window_start = 0, now
                row.failures += 1
                if row.failures >= limit and row.locked_until <= now:
                    duration = self._settings.lockout_seconds * (2 ** min(row.lockouts, 6))
                    row.locked_until = now + duration
                    row.lockouts += 1
                    row.failures = 0
                    row.window_start = now
                    new_lockouts.append(scope)
                if scope == "source":
                    source_failures = row.failures
        multiplier = min(2 ** max(source_failures - 1, 0), MAX_DELAY_MULTIPLIER)
        return FailureOutcome(
            tuple(new_lockouts), self._settings.failure_delay_seconds * multiplier
        )

    def record_success(self, user: str) -> None:
        """A full login succeeded: forget the user's recent failures (not the source's)."""
        with self._store.transaction() as db:
            row = db.get(AuthFailureCounter, _user_key(user))
            if row is not None and row.locked_until <= self._clock():
                row.failures = 0

    def unlock(self, user: str, *, actor: str) -> None:
        """Clear a user's lockout (an administrator's action, audited)."""
        with self._store.transaction() as db:
            row = db.get(AuthFailureCounter, _user_key(user))
            if row is not None:
                db.delete(row)
            record = self._audit.append(
                db,
                Trail.HUMAN,
                AuditEvent(
                    actor=actor,
                    actor_type=ActorType.ADMIN,
                    action="user.unlocked",
                    target=f"user:{user}",
                    authority=admin_authority(actor),
                ),
            )
        self._audit.committed(record)


def _user_key(user: str) -> str:
    return f"user:{user[:200]}"


def _source_key(source: str) -> str:
    return f"source:{source}"
