"""Schema migrations: where a store's schema stands, and bringing it to this release.

The revisions live in ``gateway/store/migrations/versions`` and run unchanged on
SQLite and PostgreSQL (Alembic, batch mode for SQLite's limited ALTER).
``pamgate db upgrade`` applies them; ``pamgate serve`` refuses a schema that
is not at this release's head, naming that command.

A store created before migrations (tables, no ``alembic_version``) is
adopted by the baseline revision, which creates what is missing and adds
missing nullable columns; then the later revisions run as usual.

Adding a column or table (for developers)
-----------------------------------------
1. Change :mod:`gateway.store.models` (new columns nullable, or with a server default).
2. Run ``pamgate db revision -m "what it adds"``: it builds a scratch SQLite
   store at the current head, compares it with the models and writes
   ``gateway/store/migrations/versions/NNNN_<slug>.py``. Read it; keep the
   ``batch_alter_table`` blocks (SQLite needs them); ``ruff format`` and
   ``ruff check --fix`` it.
3. Two branches that each add a revision on the same parent make two heads:
   when merging, point the later file's ``down_revision`` at the other one
   (``tests/test_migrations.py`` fails while there are two heads).
4. Add it to ``REVISIONS`` in ``tests/test_migrations.py``.
"""

from __future__ import annotations

import functools
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, create_engine, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.errors import StoreError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "alembic_version"
#: pg_advisory_xact_lock key, so two ``db upgrade`` runs at once take turns.
_UPGRADE_LOCK = 0x70616D67  # "pamg"


class SchemaOutdated(StoreError):
    """The database schema is not the one this release of pamgate works with."""


@dataclass(frozen=True)
class SchemaState:
    """Where a database's schema stands against this release."""

    #: The stamped revision, or None (empty database, or one from before migrations).
    current: str | None
    head: str
    #: Whether any pamgate table exists.
    has_tables: bool

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    @property
    def empty(self) -> bool:
        return self.current is None and not self.has_tables

    @property
    def newer_than_release(self) -> bool:
        """The database was upgraded by a newer pamgate than this one."""
        return self.current is not None and not known_revision(self.current)

    def describe(self) -> str:
        """One line for ``pamgate status`` and error messages."""
        if self.up_to_date:
            return f"revision {self.current} (up to date)"
        if self.empty:
            return f"empty (this release needs revision {self.head})"
        if self.current is None:
            return f"created before migrations (this release needs revision {self.head})"
        if self.newer_than_release:
            return (
                f"revision {self.current}, newer than this pamgate (which knows revisions up "
                f"to {self.head})"
            )
        return f"revision {self.current} (this release needs revision {self.head})"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config over pamgate's revisions, running on ``connection``."""
    # Alembic is imported only to change a schema: importing it costs about a
    # third of a second, which every command and node start would otherwise pay.
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def script_directory() -> ScriptDirectory:
    """pamgate's revisions, as Alembic reads them."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


_REVISION = re.compile(r"^revision = [\"'](\w+)[\"']$", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision = (?:[\"'](\w+)[\"']|None)$", re.MULTILINE)


@functools.cache
def _shipped_revisions() -> tuple[frozenset[str], frozenset[str]]:
    """(every revision this release ships, every revision one of them follows).

    Read from the revision files' ``revision``/``down_revision`` lines
    without Alembic (tests check that Alembic agrees).
    """
    revisions, parents = set(), set()
    for path in sorted(MIGRATIONS.joinpath("versions").glob("*.py")):
        source = path.read_text()
        found = _REVISION.search(source)
        down = _DOWN_REVISION.search(source)
        if found is None or down is None:
            continue  # __init__.py
        revisions.add(found.group(1))
        if down.group(1):
            parents.add(down.group(1))
    return frozenset(revisions), frozenset(parents)


def known_revision(revision: str) -> bool:
    """Whether this release ships ``revision`` (a database stamped with another one was
    upgraded by a newer pamgate)."""
    return revision in _shipped_revisions()[0]


@functools.cache
def head_revision() -> str:
    """The newest revision this release ships; StoreError if there are several heads."""
    revisions, parents = _shipped_revisions()
    heads = sorted(revisions - parents)
    if len(heads) != 1:
        raise StoreError(f"the migrations have {len(heads)} heads ({', '.join(heads)}): merge them")
    return heads[0]


def schema_state(engine: Engine) -> SchemaState:
    """Read the stamped revision and whether pamgate tables exist."""
    try:
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
            current = None
            if VERSION_TABLE in tables:
                current = connection.execute(
                    text(f"SELECT version_num FROM {VERSION_TABLE}")
                ).scalar()
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot read the database schema: {exc}") from None
    return SchemaState(
        current=current, head=head_revision(), has_tables=bool(tables - {VERSION_TABLE})
    )


def upgrade(engine: Engine, progress: Callable[[str], None] | None = None) -> list[str]:
    """Apply every revision between the database's and the head, one transaction each.

    Returns the revisions applied (none if already up to date). ``progress``
    gets one line per revision. On failure the failing revision is rolled
    back (on PostgreSQL; SQLite cannot roll back all DDL) and StoreError says which.
    """
    from alembic import command

    say = progress or (lambda _line: None)
    state = schema_state(engine)
    if state.up_to_date:
        return []
    if state.newer_than_release:
        raise StoreError(newer_database_message(state))
    pending = list(script_directory().iterate_revisions(state.head, state.current or "base"))
    pending.reverse()
    if state.current is None and state.has_tables:
        say("adopting a database created before migrations")
    applied = []
    for script in pending:
        summary = (script.doc or "").splitlines()[0] if script.doc else ""
        say(f"applying {script.revision}: {summary}")
        started = time.monotonic()
        try:
            with engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    connection.execute(text(f"SELECT pg_advisory_xact_lock({_UPGRADE_LOCK})"))
                command.upgrade(alembic_config(connection), script.revision)
        except (SQLAlchemyError, RuntimeError) as exc:
            raise StoreError(f"schema revision {script.revision} failed: {exc}") from None
        say(f"  done in {time.monotonic() - started:.2f} s")
        applied.append(script.revision)
    return applied


def require_current(engine: Engine, upgrade_command: str) -> None:
    """Raise SchemaOutdated, naming ``upgrade_command``, unless the schema is at the head."""
    state = schema_state(engine)
    if state.newer_than_release:
        raise SchemaOutdated(newer_database_message(state))
    if not state.up_to_date:
        raise SchemaOutdated(
            f"the database schema is {state.describe()}: run '{upgrade_command}' first"
        )


def newer_database_message(state: SchemaState) -> str:
    """What to say when a newer pamgate upgraded the database: ``db upgrade`` cannot help."""
    return (
        f"this node's pamgate is older than the database (the database is at schema "
        f"{state.current}, this release knows revisions up to {state.head}): upgrade "
        "pamgate on this node"
    )


def new_revision(message: str) -> Path:
    """Write a revision for what the models have that the head does not (developers only).

    Compares a scratch SQLite store at the current head with
    :mod:`gateway.store.models`; raises StoreError if nothing changed.
    """
    from alembic import command

    scripts = script_directory()
    # After the highest number, not the count: parallel branches reserve numbers, so the
    # chain can have gaps (0009 -> 0011).
    number = f"{max(int(s.revision) for s in scripts.walk_revisions()) + 1:04d}"
    with tempfile.TemporaryDirectory() as scratch:
        engine = create_engine(f"sqlite:///{Path(scratch) / 'head.db'}")
        try:
            upgrade(engine)
            with engine.begin() as connection:
                script = command.revision(
                    alembic_config(connection), message=message, autogenerate=True, rev_id=number
                )
        finally:
            engine.dispose()
    assert script is not None and not isinstance(script, list)
    path = Path(script.path)
    if "op." not in path.read_text().split("def upgrade", 1)[1].split("def downgrade", 1)[0]:
        path.unlink()
        raise StoreError("the models match the newest revision: nothing to write")
    return path
