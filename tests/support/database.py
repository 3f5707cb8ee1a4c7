"""The tests' databases: a SQLite file per test, or a fresh PostgreSQL database."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

#: When set (or given as --database-url), every test's store is a fresh database
#: on this PostgreSQL server instead of a SQLite file. The ``postgres`` tests
#: (several nodes) always use a PostgreSQL server: this one, else LOCAL_POSTGRES.
TEST_DATABASE_ENV = "PAMGATE_TEST_DATABASE_URL"


LOCAL_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def postgres_server_url() -> str:
    """The PostgreSQL server the multi-node tests use."""
    return os.environ.get(TEST_DATABASE_ENV) or LOCAL_POSTGRES


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty database ``pamgate_test_<random>`` on ``server_url``; dropped afterwards."""
    server = make_url(server_url)
    name = f"pamgate_test_{secrets.token_hex(6)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE {name}")
    except OperationalError as exc:
        admin.dispose()
        raise pytest.UsageError(
            f"PostgreSQL at {server.render_as_string(hide_password=True)} is not usable "
            f"({exc.orig}). Start it (scripts/test.sh does) or point ${TEST_DATABASE_ENV} "
            "at another server."
        ) from None
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


@contextmanager
def database_url_for_test(folder: Path) -> Iterator[str]:
    """The URL of a fresh store for one test: PostgreSQL if selected, else SQLite in ``folder``."""
    server = os.environ.get(TEST_DATABASE_ENV)
    if server:
        with fresh_database(server) as url:
            yield url
    else:
        yield f"sqlite:///{folder / 'pamgate.db'}"
