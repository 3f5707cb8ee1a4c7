"""The reliability suite's size knob, its figures, and helpers to read the trails.

CI runs every test at CI size (seconds each). ``PAMGATE_RELIABILITY=full``
runs the sizes the README's "Reliability" section reports (200 sessions of
10 MB, 500 machine logins, 20 SIGKILLs, ...). Each test records what it
measured with the ``figures`` fixture; the figures are printed at the end of
the run and, with ``PAMGATE_RELIABILITY_FIGURES=FILE``, written there as JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support.reliability import FULL

_FIGURES: dict[str, Any] = {}


@pytest.fixture()
def figures(request: pytest.FixtureRequest) -> dict[str, Any]:
    """A dict for the test's measured figures, reported under the test's name."""
    return _FIGURES.setdefault(request.node.name, {})


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section(f"reliability figures ({'full' if FULL else 'CI'} size)")
    for name, values in _FIGURES.items():
        terminalreporter.write_line(f"{name}: {json.dumps(values, sort_keys=True)}")
    target = os.environ.get("PAMGATE_RELIABILITY_FIGURES")
    if target:
        payload = {"size": "full" if FULL else "ci", "figures": _FIGURES}
        Path(target).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
