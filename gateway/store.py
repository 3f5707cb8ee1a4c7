"""The store: a SQLAlchemy engine and short-lived sessions over it.

SQLite (in WAL mode, so readers never block the writer) is the embedded
default; any SQLAlchemy URL works, PostgreSQL being the one for several nodes.
Each domain call opens its own short transaction with :meth:`Store.transaction`.

On SQLite a writing transaction starts with ``BEGIN IMMEDIATE``: it takes the
write lock up front (waiting up to the busy timeout for another process), so
a read-then-write such as an audit append can never fail half-way with a
stale snapshot. Read-only work passes ``write=False`` and never blocks writers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from gateway.errors import StoreError
from gateway.models import Base


class Store:
    """A database connection pool and transaction factory."""

    def __init__(self, url: str) -> None:
        self.url = url
        connect_args: dict[str, Any] = {}
        if url.startswith("sqlite"):
            # Sessions are served from a thread pool, and a writer may have to
            # wait for another process (the CLI) to finish its transaction.
            connect_args = {"check_same_thread": False, "timeout": 30}
        try:
            self.engine: Engine = create_engine(url, connect_args=connect_args)
        except (SQLAlchemyError, ValueError) as exc:
            raise StoreError(f"cannot use database URL {url!r}: {exc}") from None
        self._readers = sessionmaker(self.engine, expire_on_commit=False)
        self._writers = self._readers
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
            immediate = self.engine.execution_options(sqlite_begin="IMMEDIATE")
            self._writers = sessionmaker(immediate, expire_on_commit=False)

    def create_schema(self) -> None:
        """Create any missing tables. Existing tables and rows are left alone."""
        try:
            Base.metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot create the database schema at {self.url}: {exc}") from None

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded SQLite backend."""
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on error.

        ``write=False`` is for read-only work (listings, exports, verification).
        """
        session = (self._writers if write else self._readers)()
        try:
            with session.begin():
                yield session
        except SQLAlchemyError as exc:
            raise StoreError(f"database error: {exc}") from exc
        finally:
            session.close()

    def dispose(self) -> None:
        """Close all pooled connections."""
        self.engine.dispose()


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event emit BEGIN (pysqlite's own is always deferred).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
    connection.exec_driver_sql(f"BEGIN {mode}")
