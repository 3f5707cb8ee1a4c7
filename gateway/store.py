"""The store: a SQLAlchemy engine and short-lived sessions over it.

SQLite (in WAL mode, so readers never block the writer) is the embedded
default; any SQLAlchemy URL works, PostgreSQL being the one for several nodes.
Each domain call opens its own short transaction with :meth:`Store.transaction`.
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
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def create_schema(self) -> None:
        """Create any missing tables. Existing tables and rows are left alone."""
        try:
            Base.metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot create the database schema at {self.url}: {exc}") from None

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on error."""
        session = self._sessions()
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


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
