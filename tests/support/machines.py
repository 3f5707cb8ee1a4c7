"""NHIs for the machine-lane tests: registered, with a key, certified; stock ssh; their trail."""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.domain.audit.trail import AuditRecord, Trail
from gateway.domain.machines.registry import ScopeTarget
from gateway.services import GatewayServices
from tests.support.gateway import Gateway

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


def machine_ssh_command(
    gateway: Gateway,
    login: str,
    command: str | None,
    *,
    key: Path,
    cert: Path | None = None,
    options: tuple[str, ...] = (),
    port: int | None = None,
) -> list[str]:
    """The stock ssh client's command line: no config, no agent, only ``key`` (and ``cert``);
    ``options`` first, since ssh keeps the first value given. ``port`` defaults to the
    machine lane."""
    args = [
        "ssh", *options, "-F", "/dev/null", "-p", str(port or gateway.machine_port),
        "-o", f"UserKnownHostsFile={gateway.known_hosts}", "-o", "StrictHostKeyChecking=yes",
        "-o", "IdentityAgent=none", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=10", "-i", str(key),
    ]  # fmt: skip
    if cert is not None:
        args += ["-o", f"CertificateFile={cert}"]
    args.append(f"{login}@127.0.0.1")
    if command is not None:
        args.append(command)
    return args


def machine_ssh(
    gateway: Gateway,
    login: str,
    command: str | None,
    *,
    key: Path,
    cert: Path | None = None,
    options: tuple[str, ...] = (),
    port: int | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run :func:`machine_ssh_command` to the end (60 s at most)."""
    args = machine_ssh_command(
        gateway, login, command, key=key, cert=cert, options=options, port=port
    )
    return subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)


def trail_events(
    gateway: Gateway, trail: Trail, actor: str, action: str, *, want: int = 1, timeout: float = 10
) -> list[AuditRecord]:
    """``actor``'s ``action`` events in ``trail``, waiting up to ``timeout`` for ``want``."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in gateway.audit.events(trail) if e.actor == actor and e.action == action]
        if len(found) >= want or time.monotonic() > deadline:
            return found
        time.sleep(0.1)
