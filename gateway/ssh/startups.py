"""Unauthenticated connections of one lane, limited as sshd limits them.

- ``MaxStartups start:rate:full``: below ``start`` unauthenticated
  connections every new one is let in; from ``start`` on a new one is dropped
  with probability ``rate`` %, rising linearly to certainty at ``full``
  (random early drop: an attacker filling the slots cannot tell when the
  gateway is full, and legitimate clients still get a share). The
  arithmetic is sshd's ``should_drop_connection``.
- ``PerSourceMaxStartups``: at most N unauthenticated connections from one
  source (an IPv4 address or an IPv6 network, as the sign-in throttle counts
  them), so one address cannot take the slots that other people need.

A connection holds its slot from accept until it signs in or closes;
``LoginGraceTime`` (asyncssh's login timer) bounds how long that is. Plain
Python, one per lane, used from the event loop only.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger("pamgate.startups")

#: Drops are logged at most this often (with a count of the ones in between).
LOG_INTERVAL_SECONDS = 10.0


@dataclass(frozen=True)
class StartupLimits:
    """``max_startups`` as (start, rate, full) and the per-source cap."""

    start: int
    rate: int
    full: int
    per_source: int


class StartupLimiter:
    """Counts a lane's unauthenticated connections and decides which new ones to drop."""

    def __init__(
        self,
        lane: str,
        limits: StartupLimits,
        source_key: Callable[[str], str],
        *,
        chance: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lane = lane
        self._limits = limits
        self._source_key = source_key
        self._chance = chance
        self._clock = clock
        self._per_source: Counter[str] = Counter()
        self._total = 0
        self._dropped_unlogged = 0
        self._last_log = -LOG_INTERVAL_SECONDS

    @property
    def unauthenticated(self) -> int:
        """Connections holding a slot now."""
        return self._total

    def drop_probability(self, startups: int) -> float:
        """The chance that a new connection is dropped when ``startups`` are unauthenticated."""
        start, rate, full = self._limits.start, self._limits.rate, self._limits.full
        if startups < start:
            return 0.0
        if startups >= full or rate == 100:
            return 1.0
        # sshd's integer arithmetic: the linear rise is a staircase of whole percents.
        percent = (100 - rate) * (startups - start) // (full - start) + rate
        return percent / 100

    def admit(self, address: str) -> str:
        """Take a slot for a new connection from ``address``; "" if admitted, else why not."""
        key = self._source_key(address)
        reason = ""
        if self._per_source[key] >= self._limits.per_source:
            reason = f"{self._per_source[key]} unauthenticated connections from {key}"
        elif self._chance() < self.drop_probability(self._total):
            reason = f"{self._total} unauthenticated connections (max_startups)"
        if reason:
            self._log_drop(address, reason)
            return reason
        self._per_source[key] += 1
        self._total += 1
        return ""

    def release(self, address: str) -> None:
        """Give back the slot of a connection from ``address`` (signed in, or closed)."""
        key = self._source_key(address)
        if self._per_source[key] <= 1:
            del self._per_source[key]
        else:
            self._per_source[key] -= 1
        self._total = max(self._total - 1, 0)

    def _log_drop(self, address: str, reason: str) -> None:
        self._dropped_unlogged += 1
        now = self._clock()
        if now - self._last_log < LOG_INTERVAL_SECONDS:
            return
        logger.warning(
            "%s lane: dropped a new connection from %s: %s (%d dropped since the last report)",
            self._lane, address, reason, self._dropped_unlogged,
        )  # fmt: skip
        self._dropped_unlogged = 0
        self._last_log = now
