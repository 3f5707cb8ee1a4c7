"""The pamgate command line, run as a real subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.gateway import run_cli

pytestmark = pytest.mark.openssh  # uses ssh-keygen to check the CA line


@pytest.fixture()
def initialised(tmp_path: Path) -> Path:
    config = tmp_path / "gw" / "pamgate.toml"
    result = run_cli("--config", str(config), "init")
    assert result.returncode == 0, result.stderr
    return config


def test_help_explains_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    # Nothing on stderr in normal use: no deprecation warnings from the libraries below.
    assert result.stderr == ""
    for command in ("init", "serve", "demo", "user", "ca"):
        assert command in result.stdout
    user_help = run_cli("user", "add", "--help")
    assert "--password-stdin" in user_help.stdout and "TOTP" in user_help.stdout
    assert user_help.stderr == ""


def test_init_creates_everything_and_never_overwrites_keys(initialised: Path) -> None:
    data = initialised.parent
    keys = {
        name: (data / "keys" / name).read_bytes() for name in ("upstream_ca", "human_host_ed25519")
    }
    assert (data / "pamgate.db").exists()
    again = run_cli("--config", str(initialised), "init")
    assert again.returncode == 0, again.stderr
    assert "kept existing" in again.stdout
    for name, content in keys.items():
        assert (data / "keys" / name).read_bytes() == content
    assert oct((data / "keys" / "upstream_ca").stat().st_mode & 0o777) == "0o600"


def test_ca_show_upstream_is_one_openssh_line(initialised: Path, tmp_path: Path) -> None:
    result = run_cli("--config", str(initialised), "ca", "show", "upstream")
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.count("\n") == 0 and line.startswith("ssh-ed25519 ")
    (tmp_path / "ca.pub").write_text(line + "\n")
    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(tmp_path / "ca.pub")], capture_output=True, text=True
    )
    assert fingerprint.returncode == 0 and "SHA256:" in fingerprint.stdout


def test_user_lifecycle(initialised: Path) -> None:
    config = ("--config", str(initialised))
    added = run_cli(
        *config,
        "user",
        "add",
        "carol",
        "--group",
        "ops",
        "--password-stdin",
        input_text="a long password\n",
    )
    assert added.returncode == 0, added.stderr
    assert "otpauth://totp/pamgate:carol?secret=" in added.stdout
    assert "█" not in added.stdout and "▀" not in added.stdout  # no QR art when piped
    listing = run_cli(*config, "user", "list")
    assert "carol" in listing.stdout and "enabled" in listing.stdout and "ops" in listing.stdout
    assert run_cli(*config, "user", "disable", "carol").returncode == 0
    assert "disabled" in run_cli(*config, "user", "list").stdout
    assert run_cli(*config, "user", "enable", "carol").returncode == 0
    reset = run_cli(*config, "user", "reset-mfa", "carol")
    assert reset.returncode == 0 and "otpauth://" in reset.stdout
    passwd = run_cli(
        *config, "user", "passwd", "carol", "--password-stdin", input_text="another long one\n"
    )
    assert passwd.returncode == 0, passwd.stderr


def test_bad_input_is_refused_and_changes_nothing(initialised: Path, tmp_path: Path) -> None:
    config = ("--config", str(initialised))
    duplicate = run_cli(
        *config, "user", "add", "dave", "--password-stdin", input_text="a long password\n"
    )
    assert duplicate.returncode == 0
    again = run_cli(
        *config, "user", "add", "dave", "--password-stdin", input_text="a long password\n"
    )
    assert again.returncode == 1 and "exists already" in again.stderr
    bad_name = run_cli(
        *config, "user", "add", "da ve", "--password-stdin", input_text="a long password\n"
    )
    assert bad_name.returncode == 1 and "invalid user name" in bad_name.stderr
    no_tty = run_cli(*config, "user", "add", "erin")
    assert no_tty.returncode == 1 and "--password-stdin" in no_tty.stderr
    private = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(private)], check=True)
    wrong_file = run_cli(*config, "user", "add", "erin", "--no-password", "--ssh-key", str(private))
    assert wrong_file.returncode == 1 and "private key" in wrong_file.stderr
    unknown = run_cli(*config, "user", "disable", "nobody")
    assert unknown.returncode == 1 and "no user named 'nobody'" in unknown.stderr
    listing = run_cli(*config, "user", "list").stdout
    assert "dave" in listing and "erin" not in listing and "da ve" not in listing


def test_key_only_user(initialised: Path, tmp_path: Path) -> None:
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    result = run_cli(
        "--config",
        str(initialised),
        "user",
        "add",
        "frank",
        "--no-password",
        "--ssh-key",
        f"{key}.pub",
    )
    assert result.returncode == 0, result.stderr
    assert "key+totp" in run_cli("--config", str(initialised), "user", "list").stdout


def test_invalid_config_is_reported_with_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "pamgate.toml"
    config.write_text("[listeners.human]\nport = 99999\n")
    for command in (("serve",), ("user", "list"), ("check-config",)):
        result = run_cli("--config", str(config), *command)
        assert result.returncode == 2
        assert f"{config}: listeners.human.port:" in result.stderr


def test_config_from_environment(initialised: Path) -> None:
    import os

    env = {**os.environ, "PAMGATE_CONFIG": str(initialised)}
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert str(initialised) in result.stdout


def test_serve_refuses_uninitialised_data_dir(tmp_path: Path) -> None:
    config = tmp_path / "pamgate.toml"
    config.write_text('[gateway]\ndata_dir = "data"\n')
    result = run_cli("--config", str(config), "serve")
    assert result.returncode == 1
    assert "run 'pamgate --config" in result.stderr and "init' first" in result.stderr


def test_recordings_list_marks_break_glass_sessions(initialised: Path) -> None:
    from gateway.config import load_config
    from gateway.domain.sessions import SessionEnd, SessionLedger, SessionStart
    from gateway.services import GatewayServices

    services = GatewayServices.open(load_config(initialised))
    ledger = SessionLedger(services.store, services.audit, "cli-test")
    for session_id, authority in (("s-emergency", "breakglass:4"), ("s-granted", "grant:9")):
        start = SessionStart(lane="human", user="alice", target="web01", account="root",
                             source="192.0.2.7", authority=authority, kind="shell")  # fmt: skip
        cast = f"2026/11/23/{session_id}.cast"
        ledger.open(session_id, start, recording_path=cast)
        ledger.close(session_id, start, SessionEnd(status="closed", recording_path=cast))
    services.store.dispose()
    listing = run_cli("--config", str(initialised), "recordings", "list")
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[0]: line for line in listing.stdout.splitlines()[1:]}
    assert rows["s-emergency"].endswith("BREAK-GLASS")
    assert "BREAK-GLASS" not in rows["s-granted"]


def test_policy_check_prints_the_decision_and_its_rule(initialised: Path) -> None:
    host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFmTjzR9GHjvjKJTd3OAMN9YLhGXgOG7r3DujrQ3pqVP"
    with initialised.open("a") as config_file:
        config_file.write(f"""
[[targets]]
name = "web01"
host = "10.0.0.1"
accounts = ["root"]
host_keys = ["{host_key}"]

[[targets]]
name = "db01"
host = "10.0.0.2"
accounts = ["postgres"]
host_keys = ["{host_key}"]

[[rules]]
id = "ops-web"
groups = ["ops"]
targets = ["web01"]
mode = "allow"
hours = "08:00-18:00"

[[rules]]
id = "ops-db"
groups = ["ops"]
targets = ["db01"]
mode = "approval"
approver_groups = ["leads"]
break_glass = true
""")
    config = ("--config", str(initialised))
    added = run_cli(*config, "user", "add", "al", "--group", "ops", "--password-stdin",
                    input_text="a long password\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    check = ("policy", "check", "al")
    allowed = run_cli(*config, *check, "web01", "--at", "2026-11-23T12:00")
    assert (allowed.returncode, allowed.stdout) == (0, "allow: root@web01 (policy:ops-web)\n")
    night = run_cli(*config, *check, "web01", "--at", "2026-11-23T23:00")
    assert night.returncode == 1 and night.stdout.startswith("deny: you are not permitted")
    approval = run_cli(*config, *check, "db01:postgres")
    assert approval.returncode == 0
    assert approval.stdout.startswith("approval: postgres@db01 needs 1 approval(s) from leads")
    assert "break-glass allowed" in approval.stdout
    unknown = run_cli(*config, *check, "nosuch")
    assert unknown.returncode == 1 and "Targets you may reach: web01, db01" in unknown.stdout
    disabled = run_cli(*config, "user", "disable", "al")
    assert disabled.returncode == 0, disabled.stderr
    refused = run_cli(*config, *check, "web01", "--at", "2026-11-23T12:00")
    assert (refused.returncode, refused.stdout) == (1, "deny: user al is disabled\n")
    bad_time = run_cli(*config, *check, "web01", "--at", "noon")
    assert bad_time.returncode == 1 and "--at" in bad_time.stderr and bad_time.stdout == ""
    nobody = run_cli(*config, "policy", "check", "nobody", "web01")
    assert nobody.returncode == 1 and "no user named 'nobody'" in nobody.stderr
