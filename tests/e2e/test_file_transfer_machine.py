"""SFTP on the machine lane: only for NHIs whose scope allows it, only in their directories."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.domain.audit.trail import AuditRecord, Trail
from gateway.errors import PamgateError
from gateway.services import GatewayServices
from tests.support.gateway import Gateway
from tests.support.machines import Workload, issue, register

pytestmark = pytest.mark.openssh


def machine_sftp(gateway: Gateway, workload: Workload, batch: str, tmp_path: Path):
    script = tmp_path / f"batch-{uuid.uuid4().hex[:8]}"
    script.write_text(batch)
    return subprocess.run(
        ["sftp", "-F", "/dev/null", "-P", str(gateway.machine_port), "-b", str(script),
         "-o", f"UserKnownHostsFile={gateway.known_hosts}", "-o", "IdentitiesOnly=yes",
         "-o", "IdentityAgent=none", "-i", str(workload.key),
         "-o", f"CertificateFile={workload.cert}",
         "-o", f"User={workload.name}:web01", "127.0.0.1"],
        capture_output=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def machine_file_events(gateway: Gateway, name: str, action: str, want: int = 1):
    deadline = time.monotonic() + 10
    while True:
        found: list[AuditRecord] = [
            r for r in gateway.audit.events(Trail.MACHINE)
            if r.actor == name and r.action == action
        ]  # fmt: skip
        if len(found) >= want or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_sftp_is_held_to_the_scopes_directories(
    gateway: Gateway,
    services: GatewayServices,
    tmp_path: Path,
) -> None:
    allowed_dir = Path("/tmp") / f"pamgate-nhi-{uuid.uuid4().hex[:8]}"
    allowed_dir.mkdir()
    (allowed_dir / "in.csv").write_bytes(b"a,b\n1,2\n")
    workload = register(services, tmp_path, allow_sftp=True, sftp_paths=[str(allowed_dir)])
    issue(services, workload)
    inside = machine_sftp(gateway, workload, f"get {allowed_dir}/in.csv {tmp_path}/in.csv\n",
                          tmp_path)  # fmt: skip
    assert inside.returncode == 0, inside.stderr
    outside = machine_sftp(gateway, workload, f"get /etc/hostname {tmp_path}/h\n", tmp_path)
    assert outside.returncode != 0
    assert b"outside the allowed paths" in outside.stderr
    assert not (tmp_path / "h").exists()
    [closed] = machine_file_events(gateway, workload.name, "file.closed")
    facts = json.loads(closed.details)
    assert facts["sha256"] == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert closed.authority.startswith(f"nhi:{workload.name};serial=")
    [refused] = machine_file_events(gateway, workload.name, "file.refused")
    assert json.loads(refused.details)["path"] == "/etc/hostname"
    assert services.machines.get(workload.name).sftp_paths == (str(allowed_dir),)


def test_sftp_paths_are_checked_when_registering(
    services: GatewayServices,
    tmp_path: Path,
) -> None:
    for paths, allow, message in (
        (["relative/dir"], True, "absolute directory"),
        (["/srv/../etc"], True, "'..' is not allowed"),
        (["/srv"], False, "needs --allow-sftp"),
    ):
        with pytest.raises(PamgateError, match=message):
            register(services, tmp_path, allow_sftp=allow, sftp_paths=paths)


@pytest.fixture()
def scratch() -> Iterator[Path]:
    """A directory under /tmp for the target's side of a test, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="pamgate-target-"))
    yield folder
    shutil.rmtree(folder)


def test_sftp_paths_hold_for_the_paths_the_target_resolves(
    gateway: Gateway, services: GatewayServices, tmp_path: Path, scratch: Path
) -> None:
    allowed, outside = scratch / "allowed", scratch / "outside"
    (allowed / "sub").mkdir(parents=True)
    outside.mkdir()
    (allowed / "in.csv").write_bytes(b"inside\n")
    (allowed / "sub" / "x").write_bytes(b"also inside\n")
    (outside / "secret").write_bytes(b"secret\n")
    (allowed / "link").symlink_to("/etc")
    (allowed / "outside.txt").symlink_to(outside / "secret")
    (allowed / "dangling").symlink_to(outside / "new")
    (allowed / "inner").symlink_to(allowed / "sub")
    local = tmp_path / "upload"
    local.write_bytes(b"payload\n")
    evil = f"evil-{uuid.uuid4().hex[:8]}"
    workload = register(services, tmp_path, allow_sftp=True, sftp_paths=[str(allowed)])
    issue(services, workload)
    a, t = allowed, tmp_path
    escapes = [  # each is lexically inside the allowed directory
        f"get {a}/link/hostname {t}/h1",  # through a symlinked directory
        f"get {a}/outside.txt {t}/h2",  # a symlinked file
        f"get {a}/link/..{outside}/secret {t}/h3",  # '..' after a symlink
        f"put {local} {a}/link/{evil}",  # writing through a symlink
        f"put {local} {a}/dangling",  # creating where a dangling symlink points
        f"ls {a}/link/",
        f"rename {a}/link {a}/moved",  # moving an escape hatch around
    ]
    batch = "".join(f"-{line}\n" for line in escapes) + (
        f"-ln {a}/in.csv {a}/hard\n"  # hard links: never under a path scope
        f"get {a}/in.csv {t}/ok1\nget {a}/inner/x {t}/ok2\nput {local} {a}/uploaded\n"
    )
    result = machine_sftp(gateway, workload, batch, tmp_path)
    assert result.returncode == 0, result.stderr
    for name in ("h1", "h2", "h3"):
        assert not (tmp_path / name).exists(), name
    assert not Path(f"/etc/{evil}").exists() and not (outside / "new").exists()
    assert not Path(f"/etc/{evil}").is_symlink()
    assert (allowed / "link").is_symlink() and not (allowed / "moved").exists()
    assert not (allowed / "hard").exists()
    assert (tmp_path / "ok1").read_bytes() == b"inside\n"
    assert (tmp_path / "ok2").read_bytes() == b"also inside\n"
    assert (allowed / "uploaded").read_bytes() == b"payload\n"
    assert b"outside the allowed paths" in result.stderr
    refused = machine_file_events(gateway, workload.name, "file.refused", want=8)
    resolved = [e for e in refused if "resolves to" in e.reason]
    assert len(resolved) >= len(escapes), [e.reason for e in refused]
    assert any("'/etc/hostname'" in e.reason for e in resolved)


def test_legacy_scp_cannot_be_held_to_sftp_paths(
    gateway: Gateway, services: GatewayServices, tmp_path: Path, scratch: Path
) -> None:
    allowed = scratch / "allowed"
    allowed.mkdir()
    (allowed / "link").symlink_to("/etc")
    workload = register(services, tmp_path, commands=("re:scp .*",), allow_sftp=True,
                        sftp_paths=[str(allowed)])  # fmt: skip
    issue(services, workload)
    result = subprocess.run(
        ["scp", "-O", "-F", "/dev/null", "-P", str(gateway.machine_port),
         "-o", f"UserKnownHostsFile={gateway.known_hosts}", "-o", "IdentitiesOnly=yes",
         "-o", "IdentityAgent=none", "-o", "BatchMode=yes", "-i", str(workload.key),
         "-o", f"CertificateFile={workload.cert}",
         f"{workload.name}@127.0.0.1:{allowed}/link/hostname", str(tmp_path / "copied")],
        capture_output=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode != 0
    assert not (tmp_path / "copied").exists()
    assert b"which only SFTP can keep to" in result.stderr
    [refused] = machine_file_events(gateway, workload.name, "file.refused")
    assert json.loads(refused.details)["tool"] == "scp"


def test_allow_sftp_works_for_an_nhi_with_a_single_command(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    workload = register(services, tmp_path, commands=("uptime",), allow_sftp=True)
    issue(services, workload)
    result = machine_sftp(gateway, workload, f"get /etc/hostname {tmp_path}/h\n", tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "h").read_text() == Path("/etc/hostname").read_text()
    listing = subprocess.run(["ssh-keygen", "-L", "-f", str(workload.cert)],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "force-command" not in listing  # it would replace the SFTP subsystem
