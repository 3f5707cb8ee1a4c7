"""Audit trail benchmark: hash-chained appends per second from several processes, and
the time to verify 1 M events.

Run:  .venv/bin/python -m bench.audit_bench [--processes 4] [--writers 16] [--appends N]
                                            [--verify-events N] [--postgres URL] [--json FILE]

Goals (issue 4): >= 5,000 appends/s with the chain, from several gateway processes on
PostgreSQL; verify 1 M events in <= 10 s.

- Appends: ``--processes`` real processes (spawned, each with its own store and
  connection pool, as several nodes or workers have), each with ``--writers``
  threads calling AuditLog.record (one durable, committed event per call, as the
  lanes do) on one fresh PostgreSQL database. Timed from a shared start signal to
  the last process's end; the chain is verified afterwards. The client processes'
  own CPU time per append is reported too (/proc accounting, load-independent).
- Verify: a trail of ``--verify-events`` correctly chained events is built in bulk
  (COPY on PostgreSQL, executemany on SQLite), then AuditLog.verify runs exactly as
  ``pamgate audit verify`` does, on each backend.

Figures are medians over --repeat runs; the 1-minute load average is recorded with
them (this machine is shared: a loaded machine gives lower rates).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path
from typing import Any

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
#: The PostgreSQL server used unless --postgres names another (a fresh database each run).
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

EVENT = AuditEvent(
    actor="alice",
    actor_type=ActorType.HUMAN,
    action="auth.failure",
    outcome="failure",
    source="10.0.0.1",
    details={"factor": "totp"},
)


def load_average() -> float:
    """The 1-minute load average when called."""
    return os.getloadavg()[0]


@contextmanager
def fresh_postgres(server_url: str) -> Iterator[str]:
    """A new empty database on ``server_url`` with the schema; dropped afterwards."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    server = make_url(server_url)
    name = f"pamgate_bench_{os.getpid()}_{int(time.time() * 1000) % 1_000_000}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        store = Store(url)
        store.create_schema()
        store.dispose()
        yield url
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _appending_process(
    url: str, writers: int, per_writer: int, ready: Any, start: ProcessEvent, results: Any
) -> None:
    """One gateway-like process: its own store; ``writers`` threads appending."""
    store = Store(url)
    audit = AuditLog(store)
    audit.record(Trail.HUMAN, EVENT)  # connect and warm up before the clock starts

    def write() -> None:
        for _ in range(per_writer):
            audit.record(Trail.HUMAN, EVENT)

    threads = [threading.Thread(target=write) for _ in range(writers)]
    ready.put(os.getpid())
    start.wait()
    cpu = _cpu_seconds()
    began = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put((began, time.time(), writers * per_writer, _cpu_seconds() - cpu))
    store.dispose()


def measure_appends(server_url: str, appends: int, processes: int, writers: int) -> dict[str, Any]:
    """Appends per second from ``processes`` processes x ``writers`` threads on PostgreSQL."""
    per_writer = max(1, appends // (processes * writers))
    context = multiprocessing.get_context("spawn")
    with fresh_postgres(server_url) as url:
        ready, results = context.Queue(), context.Queue()
        start = context.Event()
        children = [
            context.Process(
                target=_appending_process, args=(url, writers, per_writer, ready, start, results)
            )
            for _ in range(processes)
        ]
        for child in children:
            child.start()
        for _ in children:
            ready.get(timeout=120)
        load = load_average()
        start.set()
        finished = [results.get(timeout=600) for _ in children]
        for child in children:
            child.join(timeout=60)
        began = min(item[0] for item in finished)
        ended = max(item[1] for item in finished)
        count = sum(item[2] for item in finished)
        cpu = sum(item[3] for item in finished)
        store = Store(url)
        result = AuditLog(store).verify(Trail.HUMAN)
        store.dispose()
        assert result.ok and result.count == count + processes, result
    return {
        "rate_per_s": count / (ended - began),
        "appends": count,
        "client_cpu_us_per_append": cpu / count * 1e6,
        "load_average": load,
    }


def chained_rows(count: int) -> Iterator[list[Any]]:
    """``count`` correctly chained events, as rows of the trail table's columns."""
    prev = GENESIS_HASH
    details = canonical_details({"factor": "totp"})
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
        yield [values[c] for c in COLUMNS]


COLUMNS = [*RECORD_FIELDS[1:], "hash"]


def build_trail(store: Store, count: int) -> None:
    """Insert ``count`` correctly chained events in bulk, and the trail's head."""
    raw = store.engine.raw_connection()
    try:
        cursor = raw.cursor()
        last_hash = GENESIS_HASH
        if store.is_sqlite:
            sql = (
                f"INSERT INTO audit_human ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(COLUMNS))})"
            )
            cursor.execute("BEGIN")
            batch = []
            for row in chained_rows(count):
                batch.append(row)
                if len(batch) == 50_000:
                    cursor.executemany(sql, batch)
                    batch.clear()
                last_hash = row[-1]
            cursor.executemany(sql, batch)
            cursor.execute(
                "INSERT INTO audit_heads (trail, seq, hash) VALUES ('human', ?, ?)",
                (count, last_hash),
            )
            cursor.execute("COMMIT")
        else:
            with cursor.copy(f"COPY audit_human ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for row in chained_rows(count):
                    copy.write_row(row)
                    last_hash = row[-1]
            cursor.execute(
                "INSERT INTO audit_heads (trail, seq, hash) VALUES ('human', %s, %s)",
                (count, last_hash),
            )
            raw.commit()
    finally:
        raw.close()


def measure_verify(store: Store, count: int) -> dict[str, Any]:
    """Seconds to verify a trail of ``count`` events in ``store``."""
    print(f"  building a {count:,}-event trail...", file=sys.stderr, flush=True)
    build_trail(store, count)
    audit = AuditLog(store)
    load = load_average()
    cpu = time.process_time()
    started = time.perf_counter()
    result = audit.verify(Trail.HUMAN)
    elapsed = time.perf_counter() - started
    assert result.ok and result.count == count, result
    return {
        "seconds": elapsed,
        "verifier_cpu_seconds": time.process_time() - cpu,
        "load_average": load,
    }


def verify_on_sqlite(count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        store = Store(f"sqlite:///{Path(folder) / 'bench.db'}")
        store.create_schema()
        try:
            return measure_verify(store, count)
        finally:
            store.dispose()


def verify_on_postgres(server_url: str, count: int) -> dict[str, Any]:
    with fresh_postgres(server_url) as url:
        store = Store(url)
        try:
            return measure_verify(store, count)
        finally:
            store.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--appends", type=int, default=40_000, help="appends per run, in all")
    parser.add_argument("--processes", type=int, default=4, help="appending processes")
    parser.add_argument(
        "--writers", type=int, default=16, help="appending threads (sessions) per process"
    )
    parser.add_argument("--verify-events", type=int, default=1_000_000)
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL server URL")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write raw figures here")
    args = parser.parse_args()

    appends, verifies_pg, verifies_sqlite = [], [], []
    for run in range(args.repeat):
        print(f"appends run {run + 1}/{args.repeat}...", file=sys.stderr, flush=True)
        appends.append(measure_appends(args.postgres, args.appends, args.processes, args.writers))
    for run in range(args.repeat):
        print(f"verify run {run + 1}/{args.repeat}...", file=sys.stderr, flush=True)
        verifies_pg.append(verify_on_postgres(args.postgres, args.verify_events))
        verifies_sqlite.append(verify_on_sqlite(args.verify_events))
    figures = {
        "append_rates_per_s": [a["rate_per_s"] for a in appends],
        "append_client_cpu_us": [a["client_cpu_us_per_append"] for a in appends],
        "append_load_average": [a["load_average"] for a in appends],
        "appends": args.appends,
        "processes": args.processes,
        "writers": args.writers,
        "backend": "postgresql",
        "verify_events": args.verify_events,
        "verify_seconds": [v["seconds"] for v in verifies_pg],
        "verify_cpu_seconds": [v["verifier_cpu_seconds"] for v in verifies_pg],
        "verify_seconds_sqlite": [v["seconds"] for v in verifies_sqlite],
        "verify_cpu_seconds_sqlite": [v["verifier_cpu_seconds"] for v in verifies_sqlite],
        "verify_load_average": [v["load_average"] for v in verifies_pg],
    }
    rate = statistics.median(figures["append_rates_per_s"])
    verify = statistics.median(figures["verify_seconds"])
    verify_sqlite = statistics.median(figures["verify_seconds_sqlite"])
    print(f"\n| figure | median of {args.repeat} | goal | met |")
    print("|---|---|---|---|")
    print(
        f"| audit appends/s, PostgreSQL, {args.processes} processes x {args.writers} writers "
        f"| {rate:,.0f} | >= {APPEND_GOAL:,.0f} | {'yes' if rate >= APPEND_GOAL else 'NO'} |"
    )
    for backend, seconds in (("PostgreSQL", verify), ("SQLite", verify_sqlite)):
        met = "yes" if seconds <= VERIFY_GOAL_SECONDS else "NO"
        print(
            f"| verify {args.verify_events:,} events, {backend} (s) | {seconds:.2f} "
            f"| <= {VERIFY_GOAL_SECONDS:.0f} | {met} |"
        )
    print(f"load average (1 min) during appends: {figures['append_load_average']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
