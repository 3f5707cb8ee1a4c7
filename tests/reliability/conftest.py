"""The reliability suite's size knob and its figures.

CI runs every test at CI size (seconds each). ``PAMGATE_RELIABILITY=full``
runs the sizes the README's "Reliability" section reports (200 sessions of
10 MB, 500 machine logins, 20 SIGKILLs, ...). Each test records what it
measured with the ``figures`` fixture; they travel with the test's report
(so pytest-xdist workers pass them on) and are printed at the end of the run
by :mod:`tests.support.figures`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.figures import FIGURES_PROPERTY


@pytest.fixture()
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A dict for the test's measured figures, reported under the test's name."""
    values: dict[str, Any] = {}
    yield values
    if values:
        request.node.user_properties.append((FIGURES_PROPERTY, values))
