"""Audit trail benchmark: hash-chained appends per second, and time to verify 1 M events.

Run:  .venv/bin/python -m bench.audit_bench [--appends N] [--verify-events N] [--json FILE]

Goals (issue 4): >= 5,000 appends/s with the chain; verify 1 M events in <= 10 s.
Appends go through AuditLog.record (one transaction each, as the lanes do).
The 1 M-event trail is built with bulk inserts of correctly chained rows, then
verified with AuditLog.verify, exactly as `pamgate audit verify` does.
Figures are medians over --repeat runs; the machine is shared, so expect noise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from gateway.domain.audit.trail import (
    GENESIS_HASH,
    RECORD_FIELDS,
    ActorType,
    AuditEvent,
    AuditLog,
    Trail,
    canonical_details,
    record_hash,
)
from gateway.store.database import Store

APPEND_GOAL = 5000.0
VERIFY_GOAL_SECONDS = 10.0


def measure_appends(count: int, writers: int) -> float:
    """Appends per second with ``writers`` threads sharing one store."""
    with tempfile.TemporaryDirectory() as folder:
        store = Store(f"sqlite:///{Path(folder) / 'bench.db'}")
        store.create_schema()
        audit = AuditLog(store)
        event = AuditEvent(
            actor="alice",
            actor_type=ActorType.HUMAN,
            action="auth.failure",
            outcome="failure",
            source="10.0.0.1",
            details={"factor": "totp"},
        )
        per_writer = count // writers

        def write() -> None:
            for _ in range(per_writer):
                audit.record(Trail.HUMAN, event)

        threads = [threading.Thread(target=write) for _ in range(writers)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        assert audit.verify(Trail.HUMAN).ok
        store.dispose()
        return per_writer * writers / elapsed


def build_trail(store: Store, count: int) -> None:
    """Insert ``count`` correctly chained events in bulk."""
    prev = GENESIS_HASH
    columns = [*RECORD_FIELDS[1:], "hash"]
    sql = f"INSERT INTO audit_human ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    details = canonical_details({"factor": "totp"})
    raw = store.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("BEGIN")
        batch = []
        for seq in range(1, count + 1):
            values = {
                "trail": "human",
                "seq": seq,
                "ts": f"2026-11-23T00:00:00.{seq % 1_000_000:06d}Z",
                "actor": f"user{seq % 97}",
                "actor_type": "human",
                "action": "auth.failure",
                "target": None,
                "account": None,
                "session_id": None,
                "source": "10.0.0.1",
                "outcome": "failure",
                "reason": "wrong password",
                "authority": None,
                "details": details,
                "prev_hash": prev,
            }
            values["hash"] = prev = record_hash(values)
            batch.append([values[c] for c in columns])
            if len(batch) == 50_000:
                cursor.executemany(sql, batch)
                batch.clear()
        cursor.executemany(sql, batch)
        cursor.execute(
            "INSERT INTO audit_heads (trail, seq, hash) VALUES ('human', ?, ?)", (count, prev)
        )
        cursor.execute("COMMIT")
    finally:
        raw.close()


def measure_verify(count: int) -> float:
    """Seconds to verify a trail of ``count`` events."""
    with tempfile.TemporaryDirectory() as folder:
        store = Store(f"sqlite:///{Path(folder) / 'bench.db'}")
        store.create_schema()
        print(f"  building a {count:,}-event trail...", file=sys.stderr, flush=True)
        build_trail(store, count)
        audit = AuditLog(store)
        started = time.perf_counter()
        result = audit.verify(Trail.HUMAN)
        elapsed = time.perf_counter() - started
        assert result.ok and result.count == count, result
        store.dispose()
        return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--appends", type=int, default=20_000)
    parser.add_argument(
        "--writers", type=int, default=16, help="concurrent appending threads (sessions)"
    )
    parser.add_argument("--verify-events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write raw figures here")
    args = parser.parse_args()

    rates = []
    for run in range(args.repeat):
        print(f"appends run {run + 1}/{args.repeat}...", file=sys.stderr, flush=True)
        rates.append(measure_appends(args.appends, args.writers))
    verifies = []
    for run in range(args.repeat):
        print(f"verify run {run + 1}/{args.repeat}...", file=sys.stderr, flush=True)
        verifies.append(measure_verify(args.verify_events))
    append_rate = statistics.median(rates)
    verify_seconds = statistics.median(verifies)
    rows = [
        (
            f"audit appends/s (hash chain, SQLite WAL, {args.writers} writers)",
            f"{append_rate:,.0f}",
            f">= {APPEND_GOAL:,.0f}",
            append_rate >= APPEND_GOAL,
        ),
        (
            f"verify {args.verify_events:,} events (s)",
            f"{verify_seconds:.2f}",
            f"<= {VERIFY_GOAL_SECONDS:.0f}",
            verify_seconds <= VERIFY_GOAL_SECONDS,
        ),
    ]
    print(f"\n| figure | median of {args.repeat} | goal | met |")
    print("|---|---|---|---|")
    for name, value, goal, met in rows:
        print(f"| {name} | {value} | {goal} | {'yes' if met else 'NO'} |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "append_rates_per_s": rates,
                    "verify_seconds": verifies,
                    "appends": args.appends,
                    "writers": args.writers,
                    "verify_events": args.verify_events,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
