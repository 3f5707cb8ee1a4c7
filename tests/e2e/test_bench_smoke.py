"""The benchmarks still run: the one command (`python -m bench --quick`), at smoke sizes.

No timings are asserted here (these machines are shared and noisy); the real
runs and their ratios are in the README.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run_all import BENCHMARKS, median_figures

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.openssh
def test_one_command_runs_every_benchmark_into_one_table(tmp_path: Path) -> None:
    output = tmp_path / "figures.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.read_text())
    assert set(report["benchmarks"]) == {bench.name for bench in BENCHMARKS}
    for name, figures in report["benchmarks"].items():
        assert "error" not in figures, f"{name}: {figures.get('error')}"
        assert figures["runs"], f"{name} wrote no figures"
        assert figures["rows"], f"{name} gave no row of the table"
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    rows = sum(len(figures["rows"]) for figures in report["benchmarks"].values())
    assert len(table) == rows + 1, result.stdout  # the header, then one line per row
    assert "FAILED" not in result.stdout


def test_unknown_benchmark_is_refused_with_the_list_of_names() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "relay,warp-drive"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "warp-drive" in result.stderr and "extraction" in result.stderr


def test_medians_keep_the_shape_of_one_run() -> None:
    runs = [{"a": 1.0, "b": {"c": [1]}, "n": "x"}, {"a": 3.0, "b": {"c": [2]}, "n": "x"},
            {"a": 2.0, "b": {"c": [3]}, "n": "x"}]  # fmt: skip
    assert median_figures(runs) == {"a": 2.0, "b": {"c": [1]}, "n": "x"}
