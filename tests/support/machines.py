"""NHIs for the machine-lane tests: registered, with a key, certified."""

from __future__ import annotations

import itertools
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from gateway.domain.machines.registry import ScopeTarget
from gateway.services import GatewayServices

_names = itertools.count()


@dataclass
class Workload:
    """An NHI and the key it holds."""

    name: str
    key: Path

    @property
    def cert(self) -> Path:
        return self.key.with_name(self.key.name + "-cert.pub")


def keypair(folder: Path, name: str, kind: str = "ed25519") -> Path:
    key = folder / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", name, "-f", str(key)], check=True
    )
    return key


def register(
    services: GatewayServices,
    folder: Path,
    *,
    commands: tuple[str, ...] = ("echo machine-ok", "re:cat /etc/host(name|s)"),
    **options: object,
) -> Workload:
    """Register a fresh NHI for web01 (root) and give it a key (no certificate yet)."""
    name = f"svc-{next(_names)}-{os.getpid()}"
    services.machines.add(
        name, actor="tests", kind="service-account", owner="Data team",
        tech_owner="ops@example.net", purpose="tests", targets=[ScopeTarget("web01", "root")],
        commands=commands, **options,  # type: ignore[arg-type]
    )  # fmt: skip
    return Workload(name, keypair(folder, name))


def issue(services: GatewayServices, workload: Workload, ttl: int = 300) -> int:
    """Sign the workload's key with pamgate (as 'machine issue' does); returns the serial."""
    signed = services.machine_credentials.issue(
        workload.name, workload.key.with_suffix(".pub").read_text(), ttl, actor="tests"
    )
    workload.cert.write_text(signed.certificate + "\n")
    return signed.serial
