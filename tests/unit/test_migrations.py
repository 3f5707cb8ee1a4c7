"""Schema migrations: one head matching the models, adoption of old stores, refusal to serve.

On SQLite by default; on PostgreSQL when ``$PAMGATE_TEST_DATABASE_URL`` is set.
"""

from __future__ import annotations

import importlib
import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from gateway.devtools.openssh_target import free_port
from gateway.store import schema
from gateway.store.database import Store
from gateway.store.models import Base
from tests.support.database import database_url_for_test
from tests.support.gateway import run_cli

#: Every revision, oldest first: a new one is added here when it is written.
REVISIONS = ["0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009", "0011",
             "0012", "0013", "0014"]


def test_one_head_and_it_matches_the_models(store: Store) -> None:
    # Two branches that each add a revision make two heads: merge them
    # (see gateway/store/schema.py).
    assert schema.script_directory().get_heads() == [schema.head_revision()]
    assert store.schema_state().up_to_date
    with store.engine.connect() as connection:
        drift = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert drift == [], f"gateway/store/models.py differs from the newest revision: {drift}"


def test_every_revision_downgrades_and_upgrades_again(store: Store) -> None:
    with store.engine.begin() as connection:
        command.downgrade(schema.alembic_config(connection), "base")
    assert store.schema_state().empty
    lines: list[str] = []
    assert store.upgrade(progress=lines.append) == REVISIONS
    assert lines[0].startswith("applying 0001: Baseline") and "done in" in lines[1]
    assert store.upgrade() == []


@pytest.mark.sqlite
def test_a_store_from_before_migrations_is_adopted_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    # What create_all made before migrations: the baseline tables, here one
    # nullable column short (added to the models later), and no alembic_version.
    baseline = importlib.import_module("gateway.store.migrations.versions.0001_baseline")
    engine = create_engine(f"sqlite:///{path}")
    baseline.metadata.create_all(engine)
    engine.dispose()
    with sqlite3.connect(path) as connection:
        connection.execute("ALTER TABLE sessions DROP COLUMN terminate_by")
        connection.execute(
            "INSERT INTO users (name, totp_secret, groups, disabled, created_at, updated_at) "
            "VALUES ('alice', 'S', '[]', 0, '2026-01-01', '2026-01-01')"
        )
    store = Store(f"sqlite:///{path}")
    try:
        state = store.schema_state()
        assert state.current is None and state.has_tables
        with pytest.raises(schema.SchemaOutdated, match="created before migrations.*db upgrade"):
            store.create_schema()
        lines: list[str] = []
        assert store.upgrade(progress=lines.append) == REVISIONS
        assert lines[0] == "adopting a database created before migrations"
        assert store.schema_state().up_to_date
        columns = {c["name"] for c in inspect(store.engine).get_columns("sessions")}
        assert "terminate_by" in columns
        with store.engine.connect() as connection:
            names = connection.exec_driver_sql("SELECT name FROM users").scalars().all()
        assert names == ["alice"]
    finally:
        store.dispose()


@pytest.mark.openssh  # init makes its keys with ssh-keygen
def test_serve_refuses_an_outdated_schema_until_db_upgrade(tmp_path: Path) -> None:
    with database_url_for_test(tmp_path / "gw") as url:
        config = tmp_path / "gw" / "pamgate.toml"
        config.parent.mkdir()
        config.write_text(
            f'[gateway]\ndata_dir = "."\ndatabase_url = "{url if "postgres" in url else ""}"\n'
            f"[listeners.human]\nport = {free_port()}\n[listeners.machine]\nenabled = false\n"
            f"port = {free_port()}\n"
        )
        assert run_cli("--config", str(config), "init").returncode == 0
        store = Store(url)
        with store.engine.begin() as connection:
            command.downgrade(schema.alembic_config(connection), "0001")
        store.dispose()

        head = schema.head_revision()
        later = len(list(schema.script_directory().iterate_revisions(head, "0001")))
        refused = run_cli("--config", str(config), "serve")
        assert refused.returncode == 1
        assert (
            f"the database schema is revision 0001 (this release needs revision {head}): "
            f"run 'pamgate --config {config} db upgrade' first"
        ) in refused.stderr
        status = run_cli("--config", str(config), "status")
        assert status.returncode == 1 and "schema: revision 0001" in status.stdout
        listing = run_cli("--config", str(config), "user", "list")
        assert listing.returncode == 1 and "db upgrade" in listing.stderr

        upgraded = run_cli("--config", str(config), "db", "upgrade")
        assert upgraded.returncode == 0, upgraded.stderr
        assert upgraded.stdout.splitlines()[:2] == [
            f"database schema: revision 0001 (this release needs revision {head})",
            "applying 0002: Gateway nodes and their heartbeats (several nodes on one database).",
        ]
        assert f"upgraded to revision {head} ({later} applied)" in upgraded.stdout
        again = run_cli("--config", str(config), "db", "upgrade")
        assert "nothing to do" in again.stdout
        status = run_cli("--config", str(config), "status")
        assert status.returncode == 0, status.stdout
        assert "up to date" in status.stdout and "nodes: 0" in status.stdout


def test_an_older_pamgate_on_a_newer_database_says_to_upgrade_pamgate(tmp_path: Path) -> None:
    """Rolling upgrade: a node still on the old release meets a schema a newer release made.
    It must not tell the operator to run `db upgrade` (which cannot go forward from there)."""
    with database_url_for_test(tmp_path / "gw") as url:
        config = tmp_path / "gw" / "pamgate.toml"
        config.parent.mkdir()
        config.write_text(
            f'[gateway]\ndata_dir = "."\ndatabase_url = "{url if "postgres" in url else ""}"\n'
            f"[listeners.human]\nport = {free_port()}\n[listeners.machine]\nenabled = false\n"
            f"port = {free_port()}\n"
        )
        assert run_cli("--config", str(config), "init").returncode == 0
        store = Store(url)
        with store.engine.begin() as connection:  # what a newer release's db upgrade leaves
            connection.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
        store.dispose()
        head = schema.head_revision()
        advice = (
            "this node's pamgate is older than the database (the database is at schema 0099, "
            f"this release knows revisions up to {head}): upgrade pamgate on this node"
        )
        for args in (("serve",), ("user", "list"), ("db", "upgrade")):
            refused = run_cli("--config", str(config), *args)
            assert refused.returncode == 1, (args, refused.stderr)
            assert advice in refused.stderr, (args, refused.stderr)
            assert "run 'pamgate" not in refused.stderr and "Traceback" not in refused.stderr
        status = run_cli("--config", str(config), "status")
        assert status.returncode == 1
        assert "schema: revision 0099, newer than this pamgate" in status.stdout


def test_db_revision_writes_nothing_when_the_models_match() -> None:
    versions = sorted(p.name for p in schema.MIGRATIONS.joinpath("versions").glob("*.py"))
    result = run_cli("db", "revision", "-m", "nothing new")
    assert result.returncode == 1
    assert "the models match the newest revision: nothing to write" in result.stderr
    assert sorted(p.name for p in schema.MIGRATIONS.joinpath("versions").glob("*.py")) == versions
