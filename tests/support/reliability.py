"""The reliability suite's size knob and helpers to read the trails.

CI runs every reliability test at CI size (seconds each); ``PAMGATE_RELIABILITY=full``
runs the sizes the README's "Reliability" section reports.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.domain.audit.trail import Trail
from tests.support.gateway import Gateway

FULL = os.environ.get("PAMGATE_RELIABILITY", "").lower() == "full"


@dataclass(frozen=True)
class Size:
    """How much work each reliability test does."""

    sessions: int
    megabytes_per_session: int
    machine_logins: int
    kill_rounds: int
    live_per_kill: int
    timing_tries: int
    brute_force_seconds: float
    fuzz_examples: int
    #: Idle unauthenticated connections held open while someone signs in.
    idle_connections: int
    #: Connections restarting keyboard-interactive at once while someone signs in.
    restarting_attackers: int


CI_SIZE = Size(
    sessions=8,
    megabytes_per_session=1,
    machine_logins=24,
    kill_rounds=2,
    live_per_kill=2,
    timing_tries=12,
    brute_force_seconds=3.0,
    fuzz_examples=150,
    idle_connections=300,
    restarting_attackers=20,
)


FULL_SIZE = Size(
    sessions=200,
    megabytes_per_session=10,
    machine_logins=500,
    kill_rounds=20,
    live_per_kill=3,
    timing_tries=300,
    brute_force_seconds=30.0,
    fuzz_examples=3000,
    idle_connections=1000,
    restarting_attackers=100,
)


SIZE = FULL_SIZE if FULL else CI_SIZE


def trail_events(gateway: Gateway, trail: Trail, action: str) -> list[dict[str, Any]]:
    """Events called ``action`` in ``trail``, details flattened in with actor and session."""
    found = []
    for record in gateway.audit.events(trail):
        if record.action == action:
            found.append(
                {
                    **json.loads(record.details),
                    "actor": record.actor,
                    "outcome": record.outcome,
                    "reason": record.reason,
                    "session": record.session_id,
                    "target": record.target,
                }
            )
    return found


def wait_for_events(
    gateway: Gateway,
    trail: Trail,
    action: str,
    count: int,
    *,
    actors: set[str] | None = None,
    timeout: float = 30,
) -> list[dict[str, Any]]:
    """Wait until ``count`` events called ``action`` (by ``actors``, if given) are in ``trail``."""
    deadline = time.monotonic() + timeout
    while True:
        found = [
            e
            for e in trail_events(gateway, trail, action)
            if actors is None or e["actor"] in actors
        ]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def gateway_rss_kib(gateway: Gateway) -> int:
    """The gateway process's resident set size, from /proc."""
    status = Path(f"/proc/{gateway.process.pid}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc status")
