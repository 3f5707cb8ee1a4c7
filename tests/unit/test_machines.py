"""Non-human identities: the registry and certificates signed by the machine CA (ssh-keygen)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.gateway import run_cli

pytestmark = pytest.mark.openssh

TARGET = """
[[targets]]
name = "db01"
host = "127.0.0.1"
accounts = ["postgres", "root"]
host_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFmTjzR9GHjvjKJTd3OAMN9YLhGXgOG7r3DujrQ3pqVP"]
"""


@pytest.fixture()
def gateway_config(tmp_path: Path) -> tuple[str, ...]:
    config = tmp_path / "pamgate.toml"
    config.write_text('[gateway]\ndata_dir = "."\n' + TARGET)
    assert run_cli("--config", str(config), "init").returncode == 0
    return ("--config", str(config))


def add_backup(config: tuple[str, ...], *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        *config, "machine", "add", "svc-backup", "--kind", "service-account",
        "--owner", "Data team", "--tech-owner", "ops@example.net", "--purpose", "nightly dump",
        "--target", "db01:postgres", "--command", "pg_dump app", *extra,
    )  # fmt: skip


def keypair(tmp_path: Path) -> Path:
    key = tmp_path / "nhi_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key.with_suffix(".pub")


def inspect(certificate: str, tmp_path: Path) -> str:
    path = tmp_path / "cert.pub"
    path.write_text(certificate + "\n")
    return subprocess.run(["ssh-keygen", "-L", "-f", str(path)], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip


def test_issued_certificate_is_narrow_and_short(gateway_config, tmp_path: Path) -> None:
    assert add_backup(gateway_config, "--source", "10.1.0.0/16").returncode == 0
    issued = run_cli(*gateway_config, "machine", "issue", "svc-backup", "--pubkey",
                     str(keypair(tmp_path)), "--ttl", "5m")  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    listing = inspect(issued.stdout.strip(), tmp_path)
    assert "user certificate" in listing
    assert re.search(r"Principals:\s*\n\s+svc-backup\n\s+Critical", listing)
    assert re.search(r'Key ID: "pamgate-nhi name=svc-backup serial=\d+ lineage=\d+ gen=1"', listing)
    assert "force-command pg_dump app" in listing
    assert "source-address 10.1.0.0/16" in listing
    assert "scope@pamgate" in listing and "permit-pty" not in listing
    valid = re.search(r"Valid: from (\S+) to (\S+)", listing)
    from datetime import datetime

    length = datetime.fromisoformat(valid.group(2)) - datetime.fromisoformat(valid.group(1))
    assert length.total_seconds() == 6 * 60  # 60 s backdated + 5 min
    ca_line = run_cli(*gateway_config, "ca", "show", "machine").stdout.strip()
    upstream = run_cli(*gateway_config, "ca", "show", "upstream").stdout.strip()
    assert ca_line.startswith("ssh-ed25519 ") and ca_line != upstream
    (tmp_path / "ca.pub").write_text(ca_line + "\n")
    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(tmp_path / "ca.pub")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[1]
    assert f"Signing CA: ED25519 {fingerprint}" in listing  # signed by the machine CA


def test_issue_refuses_long_ttl_and_inactive_identities(gateway_config, tmp_path: Path) -> None:
    assert add_backup(gateway_config, "--max-ttl", "10m").returncode == 0
    pubkey = str(keypair(tmp_path))
    too_long = run_cli(*gateway_config, "machine", "issue", "svc-backup", "--pubkey", pubkey,
                       "--ttl", "1h")  # fmt: skip
    assert too_long.returncode == 1 and "maximum of 10m" in too_long.stderr
    assert run_cli(*gateway_config, "machine", "suspend", "svc-backup").returncode == 0
    suspended = run_cli(*gateway_config, "machine", "issue", "svc-backup", "--pubkey", pubkey)
    assert suspended.returncode == 1 and "is suspended" in suspended.stderr
    assert run_cli(*gateway_config, "machine", "resume", "svc-backup").returncode == 0
    assert (
        run_cli(*gateway_config, "machine", "issue", "svc-backup", "--pubkey", pubkey).returncode
        == 0
    )


def test_registry_rules(gateway_config) -> None:
    missing_owner = run_cli(*gateway_config, "machine", "add", "svc-x", "--kind", "agent",
                            "--owner", " ", "--tech-owner", "t", "--purpose", "p",
                            "--target", "db01", "--command", "true")  # fmt: skip
    assert missing_owner.returncode == 1 and "--owner is required" in missing_owner.stderr
    bad_target = add_backup(gateway_config, "--target", "nosuch")
    assert bad_target.returncode == 1 and "no target named 'nosuch'" in bad_target.stderr
    bad_pattern = add_backup(gateway_config, "--command", "re:(unclosed")
    assert bad_pattern.returncode == 1 and "bad pattern" in bad_pattern.stderr
    too_long = add_backup(gateway_config, "--max-ttl", "2d")
    assert too_long.returncode == 1 and "between 1m and 24h" in too_long.stderr
    assert add_backup(gateway_config).returncode == 0
    assert add_backup(gateway_config).returncode == 1
    assert (
        run_cli(
            *gateway_config, "machine", "offboard", "svc-backup", "--reason", "retired"
        ).returncode
        == 0
    )
    again = add_backup(gateway_config)
    assert again.returncode == 1 and "cannot be used again" in again.stderr
    resumed = run_cli(*gateway_config, "machine", "resume", "svc-backup")
    assert resumed.returncode == 1 and "final" in resumed.stderr
    listing = run_cli(*gateway_config, "machine", "list").stdout
    assert "svc-backup" in listing and "offboarded" in listing


def test_machine_events_stay_in_the_machine_trail(gateway_config, tmp_path: Path) -> None:
    assert add_backup(gateway_config).returncode == 0
    run_cli(*gateway_config, "machine", "issue", "svc-backup", "--pubkey", str(keypair(tmp_path)))
    machine = run_cli(*gateway_config, "audit", "export", "--trail", "machine").stdout
    actions = [json.loads(line)["action"] for line in machine.splitlines()]
    assert actions == ["ca.created", "machine.created", "machine.certificate_issued"]
    human = run_cli(*gateway_config, "audit", "export", "--trail", "human").stdout
    assert "machine." not in human and "svc-backup" not in human
