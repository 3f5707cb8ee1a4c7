"""The reliability figures, gathered from the test reports and printed at the end of the run.

Registered by the root ``tests/conftest.py`` so that the process that writes
the terminal summary (the pytest-xdist controller, when the run is spread
over workers) gets them: the ``figures`` fixture (tests/reliability) puts
them in the test's ``user_properties``, which reach the controller with the
report. ``PAMGATE_RELIABILITY_FIGURES=FILE`` also writes them there as JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support.reliability import FULL

#: The user property a test's figures travel under.
FIGURES_PROPERTY = "pamgate_figures"


class FiguresReport:
    """A pytest plugin: collect each test's figures, print them once at the end."""

    def __init__(self) -> None:
        self.figures: dict[str, Any] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "teardown":
            return
        for name, values in report.user_properties:
            if name == FIGURES_PROPERTY:
                self.figures[report.nodeid.rsplit("::", 1)[-1]] = values

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.figures:
            return
        terminalreporter.section(f"reliability figures ({'full' if FULL else 'CI'} size)")
        for name, values in self.figures.items():
            terminalreporter.write_line(f"{name}: {json.dumps(values, sort_keys=True)}")
        target = os.environ.get("PAMGATE_RELIABILITY_FIGURES")
        if target:
            payload = {"size": "full" if FULL else "ci", "figures": self.figures}
            Path(target).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
