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

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, event, inspect
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
        self._write_lock = threading.RLock()
        self._readers = sessionmaker(self.engine, expire_on_commit=False)
        self._writers = self._readers
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
            self._immediate = self.engine.execution_options(sqlite_begin="IMMEDIATE")
            self._writers = sessionmaker(self._immediate, expire_on_commit=False)

    def create_schema(self) -> None:
        """Create any missing tables. Existing tables and rows are left alone.

        A new SQLite file is created readable by its owner only: it holds
        TOTP secrets and password hashes.
        """
        database = self.engine.url.database if self.is_sqlite else None
        if database and database != ":memory:":
            path = Path(database)
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            path.chmod(0o600)
        try:
            Base.metadata.create_all(self.engine)
            self._add_missing_columns()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot create the database schema at {self.url}: {exc}") from None

    def _add_missing_columns(self) -> None:
        # Until schema migrations arrive, new nullable columns are added in
        # place so an existing data directory keeps working.
        inspector = inspect(self.engine)
        with self.engine.begin() as connection:
            for table in Base.metadata.sorted_tables:
                present = {column["name"] for column in inspector.get_columns(table.name)}
                for column in table.columns:
                    if column.name not in present and column.nullable:
                        kind = column.type.compile(dialect=self.engine.dialect)
                        connection.exec_driver_sql(
                            f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}"
                        )

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
        # SQLite allows one writer at a time; queueing this process's writers
        # on a lock is far cheaper than letting them spin in SQLite's busy
        # handler. Other processes still wait on the busy timeout.
        lock = self._write_lock if write and self.is_sqlite else nullcontext()
        try:
            with lock, session.begin():
                yield session
        except SQLAlchemyError as exc:
            raise StoreError(f"database error: {exc}") from exc
        finally:
            session.close()

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A Core connection in a write transaction (committed on success).

        Lighter than :meth:`transaction` for hot paths that need no ORM.
        """
        engine = self._immediate if self.is_sqlite else self.engine
        lock = self._write_lock if self.is_sqlite else nullcontext()
        try:
            with lock, engine.begin() as connection:
                yield connection
        except SQLAlchemyError as exc:
            raise StoreError(f"database error: {exc}") from exc

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
