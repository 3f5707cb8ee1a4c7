"""Files at rest: the data directory, keys, config and recordings are owner-only; TOTP secrets
are sealed in the database under a key kept apart from it, and old secrets in clear are sealed
by ``pamgate db upgrade`` (with progress) before a node will serve.

Runs the real ``pamgate`` command; the recordings check logs in through the shared gateway.
"""

from __future__ import annotations

import os
import re
import sqlite3
import stat
from pathlib import Path

import pyotp
import pytest

from gateway.config import load_config
from gateway.services import GatewayServices
from tests.support.gateway import Gateway, run_cli


@pytest.fixture()
def initialised(tmp_path: Path) -> Path:
    config = tmp_path / "gw" / "pamgate.toml"
    result = run_cli("--config", str(config), "init")
    assert result.returncode == 0, result.stderr
    return config


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


def add_user(config: Path, name: str) -> str:
    """Create ``name`` through the CLI; return the TOTP secret it printed."""
    added = run_cli("--config", str(config), "user", "add", name, "--password-stdin",
                    input_text="a long password\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    found = re.search(r"secret=([A-Z2-7]+)", added.stdout)
    assert found, added.stdout
    return found.group(1)


def add_users(config: Path, names: tuple[str, ...]) -> dict[str, str]:
    """Create ``names`` through the domain services (quicker than one CLI run each)."""
    services = GatewayServices.open(load_config(config))
    try:
        return {
            name: services.users.add_user(name, actor="tests", password="a long password").secret
            for name in names
        }
    finally:
        services.close()


def stored_secrets(config: Path) -> dict[str, str]:
    with sqlite3.connect(config.parent / "pamgate.db") as db:
        return dict(db.execute("SELECT name, totp_secret FROM users"))


def test_init_makes_everything_owner_only(initialised: Path) -> None:
    data = initialised.parent
    # The starter config may hold a database password: 0600, like the keys.
    assert mode(initialised) == "0o600"
    assert mode(data) == "0o700"
    for folder in (data / "keys", data / "logs"):
        assert mode(folder) == "0o700", folder
    keys = sorted(p for p in (data / "keys").iterdir() if not p.name.endswith(".pub"))
    assert {p.name for p in keys} >= {"totp_secrets.key", "upstream_ca", "human_host_ed25519"}
    assert {p.name: mode(p) for p in keys} == {p.name: "0o600" for p in keys}
    assert mode(data / "pamgate.db") == "0o600"


def test_totp_secrets_are_sealed_in_the_database(initialised: Path) -> None:
    secret = add_user(initialised, "alice")
    stored = stored_secrets(initialised)["alice"]
    assert stored.startswith("aesgcm1$") and secret not in stored
    services = GatewayServices.open(load_config(initialised))
    try:
        assert services.users.verify_totp("alice", pyotp.TOTP(secret).now())
    finally:
        services.close()


def test_db_upgrade_seals_secrets_left_in_clear(initialised: Path) -> None:
    """A database from before sealing: secrets in clear, and no key file yet."""
    secrets = add_users(initialised, ("ann", "ben", "cat"))
    with sqlite3.connect(initialised.parent / "pamgate.db") as db:
        db.executemany("UPDATE users SET totp_secret = ? WHERE name = ?",
                       [(secret, name) for name, secret in secrets.items()])  # fmt: skip
    key = initialised.parent / "keys" / "totp_secrets.key"
    key.unlink()
    refused = run_cli("--config", str(initialised), "serve")
    assert refused.returncode == 1
    assert "3 TOTP secrets are stored in clear" in refused.stderr
    assert "run 'pamgate db upgrade'" in refused.stderr
    upgraded = run_cli("--config", str(initialised), "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"created {key}" in upgraded.stdout
    assert "sealing TOTP secrets: 3/3" in upgraded.stdout
    assert "TOTP secrets: 3 sealed now; all are sealed" in upgraded.stdout
    assert mode(key) == "0o600"
    stored = stored_secrets(initialised)
    assert all(value.startswith("aesgcm1$") for value in stored.values())
    services = GatewayServices.open(load_config(initialised))
    try:
        for name, secret in secrets.items():
            assert services.users.verify_totp(name, pyotp.TOTP(secret).now())
    finally:
        services.close()
    again = run_cli("--config", str(initialised), "db", "upgrade")
    assert "TOTP secrets: all sealed" in again.stdout


def test_a_missing_key_is_a_clear_error_and_is_not_replaced(initialised: Path) -> None:
    add_users(initialised, ("alice",))
    key = initialised.parent / "keys" / "totp_secrets.key"
    key_text = key.read_text()
    key.unlink()
    for command in (("serve",), ("db", "upgrade")):
        result = run_cli("--config", str(initialised), *command)
        assert result.returncode == 1, (command, result.stdout)
        assert f"the TOTP secret key is missing: {key} does not exist" in result.stderr
        assert not key.exists()  # a new key could not open the sealed secrets
    # The key from the environment works instead of the file.
    import base64

    os.environ["PAMGATE_TOTP_KEY"] = key_text.strip()
    try:
        assert base64.urlsafe_b64decode(key_text.strip())
        result = run_cli("--config", str(initialised), "db", "upgrade")
        assert result.returncode == 0, result.stderr
    finally:
        del os.environ["PAMGATE_TOTP_KEY"]


@pytest.mark.openssh
def test_recording_folders_are_owner_only(gateway: Gateway) -> None:
    user = gateway.make_user()
    assert gateway.run_ssh(user, "web01", "true").returncode == 0
    root = load_config(gateway.config_path).recordings_dir
    folders = [root, *(p for p in root.rglob("*") if p.is_dir())]
    assert len(folders) >= 3  # recordings/, year, month
    assert {str(p.relative_to(root.parent)): mode(p) for p in folders} == {
        str(p.relative_to(root.parent)): "0o700" for p in folders
    }
