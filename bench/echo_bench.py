"""Keystroke echo latency: a key typed into a remote shell, until its echo comes back.

Run:  .venv/bin/python -m bench.echo_bench [--keys 300] [--busy 0] [--json FILE]

One pty shell on the loopback target, directly (certificate) and through
pamgate (recorded), from clients in this process; each sends one key, waits
for its echo, and repeats. Reported: p50 and p99 of each, and what pamgate
adds at p50 (goal ≤ 0.3 ms) and p99. ``--busy N`` keeps N other sessions
through pamgate printing a line every 100 ms meanwhile (goal with 100:
p99 ≤ 2 ms added).

The baseline is measured under the same load at the same time: both shells
are opened after the busy sessions start, and the keys alternate between
them (direct then pamgate, then pamgate then direct, ...), so both see the
same machine. The 1-minute load average is recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import asyncssh

from bench.idle_bench import BUSY_LOOP, open_idle_session
from bench.relay_bench import client_certificate
from tests.support.gateway import Gateway, launch_gateway

#: A shell with no prompt or history to get in the way of single-key echoes.
QUIET_SHELL = "exec env PS1= bash --norc --noprofile"


async def quiet_shell(process: asyncssh.SSHClientProcess[str]) -> None:
    """Replace the login shell's prompt and start-up output with a quiet shell."""
    await process.stdout.read(4096)  # drain the start-up output
    process.stdin.write(f"{QUIET_SHELL}\n")
    await asyncio.sleep(0.5)
    await process.stdout.read(65536)


async def echo_time(process: asyncssh.SSHClientProcess[str]) -> float:
    """Send one key; seconds until it comes back."""
    started = time.perf_counter()
    process.stdin.write("x")
    await process.stdout.readexactly(1)
    return time.perf_counter() - started


async def interleaved_echo_times(
    shells: dict[str, asyncssh.SSHClientProcess[str]], keys: int
) -> dict[str, list[float]]:
    """``keys`` echoes in each shell, alternating between them (order flipped each key)."""
    for process in shells.values():
        await quiet_shell(process)
    times: dict[str, list[float]] = {name: [] for name in shells}
    names = list(shells)
    for key in range(keys):
        for name in names if key % 2 == 0 else reversed(names):
            times[name].append(await echo_time(shells[name]))
    for process in shells.values():
        process.stdin.write("\x15")  # clear the line
    return times


async def measure(gateway: Gateway, key: Path, account: str, keys: int, busy: int) -> dict:
    gate = asyncio.Semaphore(20)
    busy_sessions = [
        await open_idle_session(gateway, gateway.make_user(), gate) for _ in range(busy)
    ]
    for _, shell in busy_sessions:  # each prints a line every 100 ms
        shell.stdin.write(BUSY_LOOP)
    web01 = gateway.targets["web01"]
    try:
        async with asyncssh.connect(
            "127.0.0.1", web01.port, username=account, client_keys=[str(key)],
            known_hosts=None, agent_path=None, config=None,
        ) as direct:  # fmt: skip
            direct_shell = await direct.create_process(term_type="xterm", term_size=(80, 24))
            conn, pamgate_shell = await open_idle_session(gateway, gateway.make_user(), gate)
            try:
                load = os.getloadavg()[0]
                times = await interleaved_echo_times(
                    {"direct": direct_shell, "pamgate": pamgate_shell}, keys
                )
            finally:
                conn.close()
    finally:
        for other, _ in busy_sessions:
            other.close()
    return {**times, "load_average": load}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", type=int, default=300)
    parser.add_argument("--busy", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    account = os.environ.get("USER") or "root"
    with (
        tempfile.TemporaryDirectory(prefix="pamgate-echo-bench-") as folder,
        launch_gateway(Path(folder) / "gw") as gateway,
    ):
        key = client_certificate(gateway, Path(folder), account)
        times = asyncio.run(measure(gateway, key, account, args.keys, args.busy))
    figures: dict[str, float | int] = {
        "keys": args.keys, "busy_sessions": args.busy, "load_average": times.pop("load_average"),
        "baseline": "direct, measured at the same time (keys alternate)",
    }  # fmt: skip
    for path, values in times.items():
        figures[f"{path}_p50_ms"] = statistics.median(values) * 1000
        figures[f"{path}_p99_ms"] = percentile(values, 0.99) * 1000
    figures["added_p50_ms"] = figures["pamgate_p50_ms"] - figures["direct_p50_ms"]
    figures["added_p99_ms"] = figures["pamgate_p99_ms"] - figures["direct_p99_ms"]
    print(f"echo of {args.keys} keys, {args.busy} other busy sessions through pamgate")
    for path in ("direct", "pamgate"):
        print(f"{path:<8} p50 {figures[f'{path}_p50_ms']:.2f} ms  "
              f"p99 {figures[f'{path}_p99_ms']:.2f} ms")  # fmt: skip
    added_p50, added_p99 = figures["added_p50_ms"], figures["added_p99_ms"]
    print(f"pamgate adds: p50 {added_p50:.2f} ms, p99 {added_p99:.2f} ms")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
