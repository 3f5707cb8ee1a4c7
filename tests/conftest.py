"""Test-wide options, markers and the fixtures most tests share (a gateway, a store).

What the tests share besides fixtures is in :mod:`tests.support`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.store.database import Store
from tests.support.database import TEST_DATABASE_ENV, database_url_for_test
from tests.support.figures import FiguresReport
from tests.support.gateway import SSH, SSHD, Gateway, launch_gateway


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--database-url",
        metavar="URL",
        help=f"run the tests' stores on this PostgreSQL server (same as ${TEST_DATABASE_ENV})",
    )


def pytest_configure(config: pytest.Config) -> None:
    # Through the environment, so gateways started as subprocesses see it too.
    url = config.getoption("--database-url")
    if url:
        os.environ[TEST_DATABASE_ENV] = url
    config.pluginmanager.register(FiguresReport(), "pamgate-figures")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests that use the ``store`` fixture (the PostgreSQL pass selects them).

    Real-program tests must not be skipped silently: fail loudly if OpenSSH is missing.
    """
    for item in items:
        if "store" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.store)
    if any(item.get_closest_marker("openssh") for item in items) and not (SSH and SSHD):
        raise pytest.UsageError(
            "OpenSSH ssh/sshd not found. Install openssh-client and openssh-server "
            "(scripts/test.sh does this when run as root)."
        )


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The gateway most end-to-end tests share."""
    with launch_gateway(tmp_path_factory.mktemp("gateway")) as running:
        yield running


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    """A real store, schema created: SQLite (WAL) in ``tmp_path/pamgate.db``, or a fresh
    PostgreSQL database when ``$PAMGATE_TEST_DATABASE_URL`` is set."""
    with database_url_for_test(tmp_path) as url:
        database = Store(url)
        database.create_schema()
        yield database
        database.dispose()
