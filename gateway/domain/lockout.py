"""Failed sign-ins: throttling per (user name, source) and per source, with exponential back-off.

Two counters see every failure: the pair (this user name from this source)
and the source (any user name from it). Never the user name alone: a lock
that anyone could trigger from anywhere would lock a person out at will
(the approver too), so failures from one address never hold the same user
back at another, and a registered-key holder signing in from their own
address is not slowed by password guessing elsewhere.

Each counter lets ``*_failures`` failures through freely. The failure that
reaches that number blocks further attempts for ``backoff_seconds``; each
one after it doubles the wait, up to ``max_backoff_seconds``. A counter
forgets one failure every ``*_forget_seconds``, so an attacker who waits out
every back-off settles at one guess per forget period (the README's
guessing budget is computed from this by ``tests/reliability/test_abuse.py``).

A source is an IPv4 address or an IPv6 network of ``source_ipv6_prefix``
bits (one host owns a whole /64); anything else (``console:HOST``) is taken
as it is. Counters live in the store, so they survive restarts and are
shared by every node on one database. Unknown user names are counted like
known ones: a throttle must not reveal whether a name exists.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete
from sqlalchemy.orm import Session

from gateway.config import AuthSettings
from gateway.domain.audit.trail import ActorType, AuditEvent, AuditLog, Trail, admin_authority
from gateway.store.database import Store, insert_missing
from gateway.store.models import AuthThrottle

#: The failure delay grows with recent failures from a source up to this multiple.
MAX_DELAY_MULTIPLIER = 8
#: Longest user name kept in a counter's key.
USER_KEY_LENGTH = 200

PAIR = "pair"
SOURCE = "source"


@dataclass(frozen=True)
class ThrottleState:
    """Whether an attempt by this user name from this source may be checked now."""

    blocked: bool
    retry_after_seconds: float
    #: ``pair`` or ``source``: which counter blocks (for the audit trail, never the client).
    scope: str = ""
    #: Minimum time a failed attempt from this source takes now.
    delay_seconds: float = 0.0
    #: Failures the source's counter remembers now (any user names).
    source_failures: float = 0.0


@dataclass(frozen=True)
class FailureOutcome:
    """What counting one failure did."""

    #: Counters that started (or lengthened) a back-off with this failure.
    backoffs: tuple[str, ...]
    #: Minimum time the failed attempt should take before it is answered.
    delay_seconds: float


def source_key(source: str, ipv6_prefix: int = 64) -> str:
    """The counter key of a source: an IPv4 address, an IPv6 network, or ``source`` itself."""
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return source[:300]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, ipv6_prefix), strict=False))
    return str(address)


class FailureLimiter:
    """Counts failed sign-ins and decides back-offs and failure delays."""

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

    def state(self, user: str, source: str) -> ThrottleState:
        """May an attempt by ``user`` from ``source`` be checked now?"""
        now = self._clock()
        source_level = 0.0
        blocked: ThrottleState | None = None
        with self._store.transaction(write=False) as db:
            for scope, row in self._rows(db, user, source):
                if row is None:
                    continue
                if scope == SOURCE:
                    source_level = self._level(row, scope, now)
                if blocked is None and row.blocked_until > now:
                    blocked = ThrottleState(True, row.blocked_until - now, scope)
        delay = self._delay(source_level)
        if blocked is not None:
            return ThrottleState(
                True, blocked.retry_after_seconds, blocked.scope, delay, source_level
            )
        return ThrottleState(False, 0.0, "", delay, source_level)

    def record_failure(self, user: str, source: str) -> FailureOutcome:
        """Count one failed attempt against the pair and the source.

        The sign-in service counts an attempt *before* it checks it and takes
        the count back on success (:meth:`record_success`), so an attempt
        the client abandons half-way still counts.
        """
        now = self._clock()
        backoffs = []
        source_level = 0.0
        keys = self._keys(user, source)
        with self._store.transaction() as db:
            # Other relay workers and nodes count failures from this source at the same
            # moment: the counters are created without racing them, then locked.
            insert_missing(db, AuthThrottle, [
                {"scope": scope, "source": key_source, "user": key_user, "level": 0.0,
                 "updated_at": now, "blocked_until": 0.0}
                for scope, key_user, key_source in keys
            ])  # fmt: skip
            for scope, key_user, key_source in keys:
                row = db.get(AuthThrottle, (scope, key_source, key_user), with_for_update=True)
                assert row is not None, "inserted above"
                self._catch_up(row, scope, now)
                level = row.level = row.level + 1
                backoff = self._backoff(level, scope)
                if backoff:
                    row.blocked_until = max(row.blocked_until, now + backoff)
                    backoffs.append(scope)
                if scope == SOURCE:
                    source_level = level
        return FailureOutcome(tuple(backoffs), self._delay(source_level))

    def record_success(self, user: str, source: str) -> None:
        """A sign-in succeeded: forget the pair's failures and take back the source's count of
        this attempt (the source keeps the failures of others)."""
        now = self._clock()
        (_, pair_user, pair_source), (_, _, key_source) = self._keys(user, source)
        with self._store.transaction() as db:
            pair = db.get(AuthThrottle, (PAIR, pair_source, pair_user))
            if pair is not None:
                db.delete(pair)
            row = db.get(AuthThrottle, (SOURCE, key_source, ""), with_for_update=True)
            if row is not None:
                self._catch_up(row, SOURCE, now)
                row.level = max(row.level - 1, 0.0)
                if row.level < self._settings.source_failures:
                    row.blocked_until = 0.0

    def unlock(self, user: str, *, actor: str) -> int:
        """Forget every (``user``, source) counter: an administrator's action, audited.

        Returns how many sources had failures for ``user``. Counters of sources
        (all user names) stay: they are the sources' own doing.
        """
        with self._store.transaction() as db:
            cleared = db.execute(
                delete(AuthThrottle)
                .where(AuthThrottle.scope == PAIR)
                .where(AuthThrottle.user == user[:USER_KEY_LENGTH])
            ).rowcount  # type: ignore[attr-defined]
            record = self._audit.append(
                db,
                Trail.HUMAN,
                AuditEvent(
                    actor=actor,
                    actor_type=ActorType.ADMIN,
                    action="user.unlocked",
                    target=f"user:{user}",
                    authority=admin_authority(actor),
                    details={"sources_cleared": cleared},
                ),
            )
        self._audit.committed(record)
        return int(cleared)

    # -- internals -----------------------------------------------------------

    def _keys(self, user: str, source: str) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
        key_source = source_key(source, self._settings.source_ipv6_prefix)
        return (PAIR, user[:USER_KEY_LENGTH], key_source), (SOURCE, "", key_source)

    def _rows(self, db: Session, user: str, source: str) -> list[tuple[str, AuthThrottle | None]]:
        return [
            (scope, db.get(AuthThrottle, (scope, key_source, key_user)))
            for scope, key_user, key_source in self._keys(user, source)
        ]

    def _forget_seconds(self, scope: str) -> float:
        if scope == PAIR:
            return self._settings.user_source_forget_seconds
        return self._settings.source_forget_seconds

    def _level(self, row: AuthThrottle, scope: str, now: float) -> float:
        """The failures ``row`` still remembers at ``now``: one fewer per whole forget period."""
        periods = math.floor(max(now - row.updated_at, 0.0) / self._forget_seconds(scope))
        return max(row.level - periods, 0.0)

    def _catch_up(self, row: AuthThrottle, scope: str, now: float) -> None:
        """Bring ``row`` up to ``now``, keeping the part of a forget period already run."""
        forget = self._forget_seconds(scope)
        periods = math.floor(max(now - row.updated_at, 0.0) / forget)
        row.level = max(row.level - periods, 0.0)
        row.updated_at = now if row.level == 0 else row.updated_at + periods * forget

    def _backoff(self, level: float, scope: str) -> float:
        """Seconds to block after a failure that brought a counter to ``level`` (0: none)."""
        free = (
            self._settings.user_source_failures if scope == PAIR else self._settings.source_failures
        )
        if level < free:
            return 0.0
        # The failure that reaches the limit waits backoff_seconds; each one after it doubles.
        exponent = min(int(level - free), 30)
        return min(self._settings.backoff_seconds * 2**exponent, self._settings.max_backoff_seconds)

    def _delay(self, source_level: float) -> float:
        multiplier = min(2 ** max(int(source_level) - 1, 0), MAX_DELAY_MULTIPLIER)
        return self._settings.failure_delay_seconds * multiplier
