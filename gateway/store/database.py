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
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from gateway.errors import StoreError
from gateway.store import schema


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

    def create_schema(self, upgrade_command: str = "pamgate db upgrade") -> None:
        """Make the database ready for this release.

        An empty database gets every migration; one already at the head is
        left alone; anything else raises SchemaOutdated naming
        ``upgrade_command`` (upgrading is an operator's decision, see
        :meth:`upgrade`). A new SQLite file is created readable by its owner
        only: it holds TOTP secrets and password hashes.
        """
        self._prepare_sqlite_file()
        if schema.schema_state(self.engine).empty:
            schema.upgrade(self.engine)
        else:
            schema.require_current(self.engine, upgrade_command)

    def upgrade(self, progress: Callable[[str], None] | None = None) -> list[str]:
        """Apply pending migrations (adopting a pre-migration store); return those applied."""
        self._prepare_sqlite_file()
        return schema.upgrade(self.engine, progress)

    def schema_state(self) -> schema.SchemaState:
        """Where the schema stands against this release."""
        return schema.schema_state(self.engine)

    def require_current_schema(self, upgrade_command: str) -> None:
        """Raise SchemaOutdated (naming ``upgrade_command``) unless the schema is at the head."""
        schema.require_current(self.engine, upgrade_command)

    def _prepare_sqlite_file(self) -> None:
        database = self.engine.url.database if self.is_sqlite else None
        if database and database != ":memory:":
            path = Path(database)
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            path.chmod(0o600)

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
    def snapshot(self) -> Iterator[Connection]:
        """A read-only Core connection that sees one state of the database throughout.

        For readers that must see several statements agree while writers commit
        (audit verification: the head and the rows after it). PostgreSQL runs it as
        a ``REPEATABLE READ`` transaction; on SQLite (WAL) a deferred transaction
        already reads one snapshot from its first statement to its end.
        """
        try:
            with self.engine.connect() as connection:
                if not self.is_sqlite:
                    connection = connection.execution_options(isolation_level="REPEATABLE READ")
                with connection.begin():
                    yield connection
        except SQLAlchemyError as exc:
            raise StoreError(f"database error: {exc}") from exc

    def ping(self) -> None:
        """One round trip to the database; StoreError if it does not answer."""
        try:
            with self.engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
        except SQLAlchemyError as exc:
            raise StoreError(f"the database does not answer: {exc}") from None

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

    @contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """A Core connection on which each statement is its own transaction (PostgreSQL).

        For a hot path that is one statement: its locks are held while it runs and
        commits, not across a client's round trips. On SQLite, as :meth:`connection`.
        """
        if self.is_sqlite:
            with self.connection() as connection:
                yield connection
            return
        try:
            with self.engine.connect() as connection:
                yield connection.execution_options(isolation_level="AUTOCOMMIT")
        except SQLAlchemyError as exc:
            raise StoreError(f"database error: {exc}") from exc

    def dispose(self) -> None:
        """Close all pooled connections."""
        self.engine.dispose()


def insert_missing(db: Session, table: type[Any], rows: list[dict[str, Any]]) -> None:
    """Inside ``db``, insert ``rows`` into ``table``, skipping each whose primary key is
    already there (``INSERT ... ON CONFLICT DO NOTHING``).

    For a row that several processes (relay workers, nodes) may create at the
    same moment: a plain check-then-insert lets both insert, and the second
    fails on the primary key. Lock the row after this, with ``with_for_update``.
    """
    if db.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        db.execute(postgresql_insert(table).values(rows).on_conflict_do_nothing())
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        db.execute(sqlite_insert(table).values(rows).on_conflict_do_nothing())


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
