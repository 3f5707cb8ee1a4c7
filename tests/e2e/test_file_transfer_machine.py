"""SFTP on the machine lane: only for NHIs whose scope allows it, only in their directories."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import uuid
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
