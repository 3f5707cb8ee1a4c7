"""Every benchmark in one run: one table of figures, baselines, ratios and goals, plus raw JSON.

Run:  .venv/bin/python -m bench [--quick] [--only NAME,...] [--repeat N] [--json PATH]

Each benchmark runs as its own process (``python -m bench.<module>``, a fresh
gateway and targets each time) and writes its raw figures as JSON. Benchmarks
that repeat internally get ``--repeat N``; the others are run N times and
every figure is the median of those runs. The JSON keeps every run.
``--quick`` uses smoke sizes and one run, and leaves ssh-mitm out (it needs
PyPI): it proves the benchmarks run (CI) and says nothing about speed.
Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    figure: str
    pamgate: str
    baseline: str
    ratio: str
    goal: str
    met: bool | None  # None: no goal, or not measured
    #: The 1-minute load average around the benchmark's run(s), "start-end" (set by main).
    load: str = "-"


@dataclass(frozen=True)
class Benchmark:
    """How to run one benchmark and read its figures into rows."""

    name: str
    module: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    repeats_inside: bool
    rows: Callable[[dict[str, Any]], list[Row]]


#: What each path through pamgate records, as the relay rows name it.
RECORDING_LABELS = {
    "pamgate": "every byte recorded",
    "pamgate-default": "default settings (first MiB recorded, every byte digested)",
}


def relay_rows(f: dict[str, Any]) -> list[Row]:
    rows = []
    rates, ratios, lost = f["mb_per_s"], f["ratios"], f["bytes_lost"]
    names = sorted({key.rsplit(" ", 1)[0] for key in rates}, key=_cipher_mode_order)
    for name in names:
        cipher, mode = name.split()
        size = f["megabytes"][mode]
        short = cipher.split("@")[0].split("-")[0]
        for path, recording in RECORDING_LABELS.items():
            ours = rates.get(f"{name} {path}")
            for baseline, goal in (("-J", 1.0), ("ssh-mitm", 3.0)):
                theirs = rates.get(f"{name} {baseline}")
                ratio = ratios.get(f"{name} {path}/{baseline}")
                if ours is None or theirs is None or ratio is None:
                    continue
                note = (
                    f", ssh-mitm lost {lost[f'{name} {baseline}'] >> 10} KiB"
                    if (baseline == "ssh-mitm" and lost[f"{name} {baseline}"] > 0)
                    else ""
                )
                direct = rates.get(f"{name} direct")
                rows.append(
                    Row(
                        f"1 throughput {mode} {size} MB (first byte to last), {short}, "
                        f"{recording}, vs {baseline}{note}",
                        f"{ours:.1f} MB/s",
                        f"{baseline} {theirs:.1f} MB/s"
                        + (f"; direct {direct:.1f}" if direct else ""),
                        f"{ratio:.2f}",
                        f">= {goal:g}",
                        ratio >= goal,
                    )
                )
    # (JSON key, what it covers, the -J baseline's name): the middle hop alone, then the path.
    cpu_figures = (
        ("cpu_s_per_gb", "relayed", "middle hop's process tree, first byte to session end",
         "-J bastion sshd"),
        ("path_cpu_s_per_gb", "on the whole path", "client + middle hop + target, first byte "
         "to end (what throughput follows when every core is busy)", "-J"),
    )  # fmt: skip
    for name in names:
        cipher, mode = name.split()
        short = cipher.split("@")[0].split("-")[0]
        for key, scope, covers, jump_name in cpu_figures:
            figures = f.get(key, {})
            # The middle hop has no direct figure: direct has no middle.
            theirs, direct = figures.get(f"{name} -J"), figures.get(f"{name} direct")
            for path, recording in RECORDING_LABELS.items():
                ours = figures.get(f"{name} {path}")
                if ours is None or theirs is None:
                    continue
                rows.append(
                    Row(
                        f"1 CPU-seconds per GB {scope}, {mode} {f['megabytes'][mode]} MB, "
                        f"{short}, {recording}: {covers}",
                        f"{ours:.1f} CPU-s/GB",
                        f"{jump_name} {theirs:.1f} CPU-s/GB"
                        + (f"; direct {direct:.1f}" if direct else ""),
                        f"{ours / theirs:.2f}" if theirs else "-",
                        "- (reported; lower is better)",
                        None,
                    )
                )
    aggregate = f.get("aggregate")
    if aggregate:
        sessions, each = aggregate["sessions"], aggregate["megabytes_each"]
        short = aggregate["cipher"].split("@")[0].split("-")[0]
        jump = aggregate["mb_per_s"].get("-J")
        every_core = f"{aggregate['workers_n']} relay processes"
        for name, label in (("pamgate 1 worker", "1 relay process"),
                            ("pamgate N workers", every_core)):  # fmt: skip
            ours = aggregate["mb_per_s"].get(name)
            figure = (
                f"1 aggregate of {sessions} concurrent exec sessions x {each} MB "
                f"(started together once logged in), {short}, default settings, "
            )
            if ours is None:
                rows.append(Row(figure + label, aggregate["workers_n_note"][:90], "-", "-",
                                ">= 1", None))  # fmt: skip
                continue
            ratio = ours / jump if jump else None
            rows.append(
                Row(
                    figure + label,
                    f"{ours:.1f} MB/s",
                    f"-J {jump:.1f} MB/s" if jump else "-",
                    f"{ratio:.2f}" if ratio else "-",
                    ">= 1",
                    ratio >= 1.0 if ratio else None,
                )
            )
    if not any("ssh-mitm" in key for key in rates):
        rows.append(
            Row(
                "1 throughput vs ssh-mitm", "-", f"ssh-mitm: {f['mitm']['note']}", "-", ">= 3", None
            )
        )
    return rows


def _cipher_mode_order(name: str) -> tuple[str, int]:
    cipher, mode = name.split()
    return cipher, 0 if mode == "exec" else 1


def echo_rows(f: dict[str, Any]) -> list[Row]:
    busy = int(f["busy_sessions"])
    # Older runs measured the baseline before the load; say which this is.
    when = " at the same time" if "baseline" in f else " (measured before the load)"
    direct = f"direct{when} p50 {f['direct_p50_ms']:.2f} / p99 {f['direct_p99_ms']:.2f} ms"
    ours = f"p50 {f['pamgate_p50_ms']:.2f} / p99 {f['pamgate_p99_ms']:.2f} ms"
    if busy == 0:
        added = f["added_p50_ms"]
        return [
            Row(
                "2 keystroke echo, one session: added at p50",
                ours,
                direct,
                f"+{added:.2f} ms",
                "<= 0.3 ms added",
                added <= 0.3,
            )
        ]
    added = f["added_p99_ms"]
    return [
        Row(
            f"2 keystroke echo with {busy} other active sessions: added at p99",
            ours,
            direct,
            f"+{added:.2f} ms",
            "<= 2 ms added",
            added <= 2.0,
        )
    ]


def login_rows(f: dict[str, Any]) -> list[Row]:
    ratio = f["ratio"]
    return [
        Row(
            "3 login (password + TOTP, a policy allow rule, fresh upstream certificate) to `true`",
            f"{f['pamgate_median_s'] * 1000:.0f} ms",
            f"direct certificate login {f['direct_median_s'] * 1000:.0f} ms",
            f"{ratio:.2f}",
            "<= 2",
            ratio <= 2.0,
        )
    ]


def idle_rows(f: dict[str, Any]) -> list[Row]:
    per = f["per_session_kib"]
    return [
        Row(
            f"4 RSS per session, {f['sessions']:.0f} idle + {f['active_sessions']:.0f} active",
            f"{per:.0f} KiB",
            f"RSS {f['rss_before_mib']:.0f} -> {f['rss_with_sessions_mib']:.0f} MiB",
            "-",
            "<= 512 KiB",
            per <= 512,
        )
    ]


def machine_rows(f: dict[str, Any]) -> list[Row]:
    ours, direct = f["pamgate"], f["direct"]
    met = ours["logins_per_second"] >= 100 and ours["p99_ms"] <= 150
    return [
        Row(
            f"5 machine lane logins + `true`, {f['settings']['concurrency']:.0f} concurrent",
            f"{ours['logins_per_second']:.1f}/s, p99 {ours['p99_ms']:.0f} ms",
            f"direct sshd {direct['logins_per_second']:.1f}/s, p99 {direct['p99_ms']:.0f} ms",
            f"{f['ratio_logins_per_second']:.2f}",
            ">= 100/s, p99 <= 150 ms",
            met,
        )
    ]


def seek_rows(f: dict[str, Any]) -> list[Row]:
    median, p99 = f["seek_median_ms"], f["seek_p99_ms"]
    return [
        Row(
            f"6 seek in a {f['megabytes']:.0f} MB {f.get('shape', 'spread')} recording",
            f"median {median:.0f} ms, p99 {p99:.0f} ms",
            f"index built once in {f['index_build_s']:.1f} s",
            "-",
            "<= 100 ms at p99",
            p99 <= 100,
        )
    ]


def audit_rows(f: dict[str, Any]) -> list[Row]:
    rate = statistics.median(f["append_rates_per_s"])
    cpu = statistics.median(f["append_client_cpu_us"])
    rows = [
        Row(
            f"7 audit appends/s, hash chain, PostgreSQL, {f['processes']} processes x "
            f"{f['writers']} writers, each append committed",
            f"{rate:,.0f}/s",
            f"client CPU {cpu:.0f} us/append",
            "-",
            ">= 5,000/s",
            rate >= 5000,
        )
    ]
    for backend, key in (("PostgreSQL", "verify_seconds"), ("SQLite", "verify_seconds_sqlite")):
        verify = statistics.median(f[key])
        rows.append(
            Row(
                f"7 audit verify {f['verify_events']:,} events, {backend}",
                f"{verify:.1f} s",
                "-",
                "-",
                "<= 10 s",
                verify <= 10,
            )
        )
    return rows


def extraction_rows(f: dict[str, Any]) -> list[Row]:
    ratio = f["ratio_on_off"]
    return [
        Row(
            f"8 pty shell throughput, {f['megabytes']:.0f} MB, extraction running vs not",
            f"{f['on_median']:.1f} MB/s",
            f"not running {f['off_median']:.1f} MB/s",
            f"{ratio:.2f}",
            ">= 0.9",
            ratio >= 0.9,
        )
    ]


BENCHMARKS = (
    Benchmark(
        "relay",
        "relay_bench",
        (),
        (
            "--exec-megabytes",
            "2",
            "--pty-megabytes",
            "1",
            "--no-mitm",
            "--aggregate-sessions",
            "2",
            "--aggregate-megabytes",
            "1",
        ),  # fmt: skip
        True,
        relay_rows,
    ),
    Benchmark("echo", "echo_bench", ("--keys", "300"), ("--keys", "5"), False, echo_rows),
    Benchmark(
        "echo-busy",
        "echo_bench",
        ("--keys", "300", "--busy", "100"),
        ("--keys", "5", "--busy", "2"),
        False,
        echo_rows,
    ),
    Benchmark("login", "login_bench", ("--logins", "10"), ("--logins", "2"), False, login_rows),
    Benchmark(
        "idle",
        "idle_bench",
        ("--sessions", "1000", "--active", "100"),
        ("--sessions", "3", "--active", "1"),
        False,
        idle_rows,
    ),
    Benchmark(
        "machine",
        "machine_bench",
        ("--logins", "200", "--concurrency", "20"),
        ("--logins", "4", "--concurrency", "2"),
        False,
        machine_rows,
    ),
    Benchmark(
        "seek",
        "seek_bench",
        ("--megabytes", "1024", "--seeks", "200"),
        ("--megabytes", "2", "--seeks", "5"),
        False,
        seek_rows,
    ),
    Benchmark(
        "audit",
        "audit_bench",
        (),
        ("--appends", "200", "--processes", "2", "--writers", "2", "--verify-events", "2000"),
        True,
        audit_rows,
    ),
    Benchmark(
        "extraction",
        "extraction_bench",
        ("--megabytes", "100"),
        ("--megabytes", "1"),
        True,
        extraction_rows,
    ),
)


def median_figures(runs: list[Any]) -> Any:
    """The median of each number across runs, keeping the shape of one run."""
    first = runs[0]
    if isinstance(first, dict):
        return {key: median_figures([run[key] for run in runs]) for key in first}
    if isinstance(first, bool) or not isinstance(first, int | float):
        return first
    return statistics.median(runs)


def run_benchmark(bench: Benchmark, *, quick: bool, repeat: int, folder: Path) -> dict[str, Any]:
    """Run one benchmark (``repeat`` times unless it repeats inside); its runs and median."""
    arguments = list(bench.quick if quick else bench.full)
    times = 1 if bench.repeats_inside else repeat
    if bench.repeats_inside:
        arguments += ["--repeat", str(repeat)]
    runs = []
    for run in range(times):
        output = folder / f"{bench.name}-{run}.json"
        command = [sys.executable, "-m", f"bench.{bench.module}", *arguments, "--json", str(output)]
        print(f"  $ {shlex.join(command[1:])}", file=sys.stderr, flush=True)
        # The benchmark's own table goes to our stderr, with its progress.
        result = subprocess.run(command, cwd=ROOT, stdout=sys.stderr.fileno(), check=False)
        if result.returncode != 0:
            raise RuntimeError(f"bench.{bench.module} exited with status {result.returncode}")
        runs.append(json.loads(output.read_text()))
    return {"command": arguments, "runs": runs, "median": median_figures(runs)}


def table_lines(rows: list[Row]) -> list[str]:
    """The markdown table of ``rows``: a header, then one line per row."""
    lines = [
        "| # figure | pamgate | baseline | ratio | goal | met? | load avg |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        met = "-" if row.met is None else ("yes" if row.met else "**no**")
        lines.append(
            f"| {row.figure} | {row.pamgate} | {row.baseline} | {row.ratio} | {row.goal} "
            f"| {met} | {row.load} |"
        )
    return lines


def print_table(rows: list[Row]) -> None:
    print("\n".join(table_lines(rows)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    names = [bench.name for bench in BENCHMARKS]
    parser.add_argument("--quick", action="store_true", help="smoke sizes (CI): no real figures")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(names)}")
    parser.add_argument(
        "--repeat", type=int, help="runs per figure, reported as medians (default 3; 1 if --quick)"
    )
    parser.add_argument("--json", type=Path, help="write raw figures here")
    args = parser.parse_args(argv)
    chosen = names if not args.only else [name.strip() for name in args.only.split(",")]
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    selected = [bench for bench in BENCHMARKS if bench.name in chosen]
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "machine": platform.platform(),
        "command": shlex.join(["python", "-m", "bench", *(argv or sys.argv[1:])]),
        "quick": args.quick,
        "repeat": args.repeat,
        "benchmarks": {},
    }
    rows: list[Row] = []
    failed = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pamgate-bench-") as folder:
        for number, bench in enumerate(selected, 1):
            elapsed = time.perf_counter() - started
            print(
                f"[{number}/{len(selected)}] {bench.name} (at {elapsed:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
            bench_started = time.perf_counter()
            load_before = os.getloadavg()[0]
            try:
                result = run_benchmark(
                    bench, quick=args.quick, repeat=args.repeat, folder=Path(folder)
                )
                load = f"{load_before:.1f}-{os.getloadavg()[0]:.1f}"
                result["load_average"] = {"start": load_before, "end": os.getloadavg()[0]}
                bench_rows = [
                    dataclasses.replace(row, load=load) for row in bench.rows(result["median"])
                ]
                result["rows"] = [row.__dict__ for row in bench_rows]
                rows.extend(bench_rows)
            except (RuntimeError, OSError, ValueError, KeyError) as exc:
                failed.append(bench.name)
                result = {"error": f"{type(exc).__name__}: {exc}"}
                rows.append(Row(f"{bench.name}: FAILED", str(exc)[:80], "-", "-", "-", None))
            result["seconds"] = time.perf_counter() - bench_started
            report["benchmarks"][bench.name] = result
            if args.json:  # written as we go: a long run that dies keeps what it measured
                args.json.write_text(json.dumps(report, indent=2) + "\n")
    report["seconds"] = time.perf_counter() - started
    print(
        f"\n{report['date']}, {report['cores']} cores, {report['command']}"
        f"{' (quick: smoke sizes, not figures)' if args.quick else ''}"
    )
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
