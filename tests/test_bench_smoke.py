"""The benchmarks still run: each at a tiny size, checking it reports its figures.

No timings are asserted here (these machines are shared and noisy); the real
runs and their ratios are in the README.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.openssh

SMOKE_RUNS = {
    "relay_bench": ["--megabytes", "1", "--repeat", "1"],
    "audit_bench": ["--appends", "200", "--verify-events", "2000", "--repeat", "1"],
    "machine_bench": ["--logins", "4", "--concurrency", "2"],
    "login_bench": ["--logins", "2"],
    "seek_bench": ["--megabytes", "2", "--seeks", "5"],
    "idle_bench": ["--sessions", "3"],
    "echo_bench": ["--keys", "5", "--busy", "1"],
}


@pytest.mark.parametrize("bench", sorted(SMOKE_RUNS))
def test_benchmark_runs_and_reports(bench: str, tmp_path: Path) -> None:
    output = tmp_path / "figures.json"
    result = subprocess.run(
        [sys.executable, "-m", f"bench.{bench}", *SMOKE_RUNS[bench], "--json", str(output)],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(output.read_text())
    assert figures, "the benchmark wrote no figures"
    assert result.stdout.strip(), "the benchmark printed no table"
