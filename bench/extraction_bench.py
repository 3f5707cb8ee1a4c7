"""Relay throughput with command extraction running vs not running (figure 8).

Run:  .venv/bin/python -m bench.extraction_bench [--megabytes 100] [--repeat 3] [--json FILE]

pamgate extracts a shell session's commands from its recording after the
session ends, in a worker process of the gateway (never on the relay's path,
and never dropped: it cannot be turned off). What it can still cost the
relay is CPU while it runs. So this measures a pty shell session moving N
MB of base64 text through pamgate (recording on) twice:
- off: when the gateway is quiet (no extraction running);
- on:  straight after another such session ended, while the gateway extracts
  that session's commands (a terminal emulator over N MB of output).
Reported: both throughputs and on / off (goal >= 0.9), and how long the
extraction kept running after the measured session.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.relay_bench import RECORD_EVERYTHING, payload_command, transfer
from tests.support.gateway import Gateway, launch_gateway

CPU_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process and its live children (the extraction worker) have used."""
    total = 0.0
    for member in [pid, *children(pid)]:
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # it ended meanwhile
        total += (int(fields[11]) + int(fields[12])) / CPU_TICKS
    return total


def children(pid: int) -> list[int]:
    """Process ids below ``pid`` (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in task.read_text().split():
            found += [int(child), *children(int(child))]
    return found


def wait_until_quiet(pid: int, timeout: float = 900) -> float:
    """Wait until the process uses under 5 % of a core for a second; seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        before = cpu_seconds(pid)
        time.sleep(1)
        if cpu_seconds(pid) - before < 0.05:
            return time.perf_counter() - started
    raise RuntimeError(f"the gateway was still busy after {timeout:.0f} s")


def shell_session(gateway: Gateway, size: int) -> float:
    """Seconds for a pty shell through pamgate to print ``size`` bytes and exit."""
    user = gateway.make_user()
    command = gateway.ssh_command(f"{user.name}:web01", extra=("-tt",))
    typed = f"{payload_command(size)}; exit\n".encode()
    done = transfer(command, gateway.ssh_env(user), typed)
    if done.received < size:
        raise RuntimeError(
            f"shell session printed {done.received} of {size} bytes: {done.stderr!r}"
        )
    return done.seconds


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    size = args.megabytes * 1024 * 1024
    off, on, extraction_tail = [], [], []
    with (
        tempfile.TemporaryDirectory(prefix="pamgate-extraction-bench-") as folder,
        launch_gateway(Path(folder) / "gw", RECORD_EVERYTHING) as gateway,
    ):
        pid = gateway.process.pid
        shell_session(gateway, 4096)  # warm-up: everything loaded once
        for run in range(args.repeat):
            print(f"run {run + 1}/{args.repeat}: waiting for a quiet gateway...",
                  file=sys.stderr, flush=True)  # fmt: skip
            wait_until_quiet(pid)
            print(f"run {run + 1}/{args.repeat}: extraction off, then on ({args.megabytes} MB)...",
                  file=sys.stderr, flush=True)  # fmt: skip
            off.append(args.megabytes / shell_session(gateway, size))
            on.append(args.megabytes / shell_session(gateway, size))
            extraction_tail.append(wait_until_quiet(pid))
    figures = {
        "megabytes": args.megabytes,
        "off_mb_per_s": off,
        "on_mb_per_s": on,
        "extraction_after_session_s": extraction_tail,
        "off_median": statistics.median(off),
        "on_median": statistics.median(on),
    }
    figures["ratio_on_off"] = figures["on_median"] / figures["off_median"]
    print(f"pty shell through pamgate, {args.megabytes} MB, median of {args.repeat}")
    print(f"extraction off: {figures['off_median']:.1f} MB/s")
    print(f"extraction on:  {figures['on_median']:.1f} MB/s  (extraction ran on "
          f"{statistics.median(extraction_tail):.0f} s after the session)")  # fmt: skip
    print(f"on / off: {figures['ratio_on_off']:.2f}  (goal >= 0.9)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
