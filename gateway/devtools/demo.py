"""``pamgate demo``: a gateway, a real OpenSSH target and two users, ready for ``ssh``.

Everything lives in one data directory (default ``./pamgate-demo``) with a
real config file, so every other ``pamgate --config DIR/pamgate.toml ...``
command works against the running demo. Running the demo again reuses the
directory: same ports, keys, users and credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import getpass
import json
import os
import socket
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from gateway.config import GatewayConfig, load_config
from gateway.crypto.secret_box import SecretBox
from gateway.datadir import DataDir, initialize
from gateway.devtools.openssh_target import OpenSSHTarget, free_port
from gateway.domain.audit.trail import AuditLog
from gateway.domain.enrolment import render_enrolment
from gateway.domain.identities import UserDirectory
from gateway.domain.machines.registry import MachineRegistry, ScopeTarget
from gateway.errors import PamgateError
from gateway.ssh.node import GatewayNode, configure_logging, run_until_signalled
from gateway.store.database import Store

DEFAULT_DEMO_DIR = Path("pamgate-demo")
DEMO_TARGET = "web01"
DEMO_APPROVAL_TARGET = "db01"
DEMO_GROUP = "admins"
#: Demo users, their groups and what they show.
DEMO_USERS = {
    "alice": (
        ("admins", "pamgate-admins"),
        "admin: web01 directly, db01 after approval; console admin",
    ),
    "bob": (
        ("admins", "approvers", "auditors"),
        "approver and auditor: approves alice's requests, replays her sessions",
    ),
}
#: Bumped when the demo's config changes shape; older demo configs are rewritten.
DEMO_CONFIG_VERSION = 6
PREFERRED_GATEWAY_PORT = 2222
PREFERRED_MACHINE_PORT = 2223
#: The NHI the demo's instructions register.
DEMO_WORKLOAD = "demo-ci"
#: A second NHI, registered by the demo itself and over-broad on purpose: any command, on
#: both targets, from anywhere, with pty and SFTP. The entitlement review shows it up.
DEMO_BROAD_WORKLOAD = "demo-backup"
CREDENTIALS_FILE = "demo-credentials.json"
#: Held (flock) while a demo runs from the directory: a second one says so and stops.
LOCK_FILE = "demo.lock"
#: The local port the instructions' ``ssh -L`` example listens on.
DEMO_FORWARD_PORT = 10022
DEMO_ACTOR = "pamgate-demo"


@dataclass(frozen=True)
class DemoCredential:
    """A demo user's first and second factor, kept so a rerun can print them again."""

    user: str
    password: str
    totp_secret: str


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def write_demo_config(
    data_dir: Path, gateway_port: int, machine_port: int, target: OpenSSHTarget, account: str
) -> Path:
    """Write the demo's pamgate.toml (only when it does not exist yet)."""
    config_path = data_dir / "pamgate.toml"
    q = json.dumps  # a JSON string is a valid TOML basic string
    config_path.write_text(
        f"""# pamgate demo configuration, written by 'pamgate demo'.
# demo-config-version: {DEMO_CONFIG_VERSION}
# See config/pamgate.example.toml in the source tree for every setting.

[gateway]
name = "demo"
data_dir = "."

[listeners.human]
address = "127.0.0.1"
port = {gateway_port}

[listeners.machine]
address = "127.0.0.1"
port = {machine_port}

[auth]
# Demo-friendly back-off; production defaults are 30 s / 3600 s / 1.0 s.
backoff_seconds = 10
max_backoff_seconds = 300
failure_delay_seconds = 0.5

[[targets]]
name = {q(DEMO_TARGET)}
description = "demo OpenSSH target"
host = "127.0.0.1"
port = {target.port}
accounts = [{q(account)}]
default_account = {q(account)}
upstream_auth = "certificate"
host_keys = [{q(target.host_key_line())}]

# The same server under another name, to show the approval flow.
[[targets]]
name = {q(DEMO_APPROVAL_TARGET)}
description = "needs approval"
host = "127.0.0.1"
port = {target.port}
accounts = [{q(account)}]
default_account = {q(account)}
host_keys = [{q(target.host_key_line())}]

[[rules]]
id = "admins-web01"
groups = [{q(DEMO_GROUP)}]
targets = [{q(DEMO_TARGET)}]
mode = "allow"
file_transfer = "download-only"
# ssh -L may reach the target's own sshd (as the target sees it), nothing else.
forward_local = [{q(f"127.0.0.1:{target.port}")}]

[[rules]]
id = "admins-db01-approval"
groups = [{q(DEMO_GROUP)}]
targets = [{q(DEMO_APPROVAL_TARGET)}]
mode = "approval"
approver_groups = ["approvers"]
reason_required = true
file_transfer = "allow"
default_duration = "15m"
max_duration = "1h"
break_glass = true
break_glass_max_duration = "30m"
"""
    )
    return config_path


def ensure_demo_users(config: GatewayConfig) -> list[DemoCredential]:
    """Create the demo users, or load their saved credentials.

    Saved credentials that no longer work (after ``user passwd`` or
    ``user reset-mfa``) are replaced, so the demo never prints stale ones.
    """
    saved_path = config.data_dir / CREDENTIALS_FILE
    saved: dict[str, dict[str, str]] = {}
    if saved_path.exists():
        saved = json.loads(saved_path.read_text())
    store = Store(config.database_url)
    box = functools.cache(lambda: SecretBox.load(DataDir(config.data_dir).totp_key))
    users = UserDirectory(store, AuditLog(store), secret_box=box)
    credentials = []
    try:
        users.seal_plain_secrets()  # a demo directory from before secrets were sealed
        for name, (groups, _) in DEMO_USERS.items():
            existing = users.get(name)
            if existing is not None and set(existing.groups) != set(groups):
                users.set_groups(name, groups, actor=DEMO_ACTOR)
            kept = saved.get(name)
            if (
                existing is not None
                and kept is not None
                and users.credentials_match(name, kept["password"], kept["totp_secret"])
            ):
                credentials.append(DemoCredential(name, **kept))
                continue
            password = _demo_password()
            if existing is None:
                enrolment = users.add_user(name, actor=DEMO_ACTOR, groups=groups, password=password)
            else:
                users.set_password(name, password, actor=DEMO_ACTOR)
                enrolment = users.reset_mfa(name, actor=DEMO_ACTOR)
            credentials.append(DemoCredential(name, password, enrolment.secret))
    finally:
        store.dispose()
    fd = os.open(saved_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(
            {c.user: {"password": c.password, "totp_secret": c.totp_secret} for c in credentials},
            handle,
            indent=2,
        )
    return credentials


def ensure_demo_machines(config: GatewayConfig) -> None:
    """Register the over-broad NHI (:data:`DEMO_BROAD_WORKLOAD`) unless it exists (or was
    offboarded: its name cannot come back, and the demo respects that)."""
    store = Store(config.database_url)
    machines = MachineRegistry(store, AuditLog(store))
    try:
        if DEMO_BROAD_WORKLOAD in {machine.name for machine in machines.list()}:
            return
        scope = [
            ScopeTarget(target.name, account)
            for target in config.targets
            if target.name in (DEMO_TARGET, DEMO_APPROVAL_TARGET)
            for account in target.accounts
        ]
        machines.add(
            DEMO_BROAD_WORKLOAD, actor=DEMO_ACTOR, kind="service-account", owner="bob",
            tech_owner="ops@example.net",
            purpose="nightly backup (registered over-broad on purpose: pamgate access stale)",
            targets=scope, commands=["tar -czf - /etc", "re:.*"], allow_pty=True,
            allow_sftp=True,
        )  # fmt: skip
    finally:
        store.dispose()


def _outdated_demo_ports(config_path: Path) -> tuple[int, int] | None:
    """(human lane port, target port) of a config written by an older demo, else None."""
    if not config_path.exists():
        return None
    text = config_path.read_text()
    if not text.startswith("# pamgate demo configuration"):
        return None
    if f"# demo-config-version: {DEMO_CONFIG_VERSION}" in text:
        return None
    try:
        data = tomllib.loads(text)
        return int(data["listeners"]["human"]["port"]), int(data["targets"][0]["port"])
    except (tomllib.TOMLDecodeError, KeyError, IndexError, TypeError, ValueError):
        return None


def _demo_password() -> str:
    import secrets

    return secrets.token_urlsafe(12)


def _pamgate_command() -> str:
    script = Path(sys.argv[0])
    if script.name == "pamgate" and script.exists():
        try:
            return str(script.resolve().relative_to(Path.cwd()))
        except ValueError:
            return str(script.resolve())
    return "pamgate"


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def instructions(
    config: GatewayConfig, credentials: list[DemoCredential], target: OpenSSHTarget
) -> str:
    """The text the demo prints once it is ready."""
    human, machine = config.listeners.human, config.listeners.machine
    data = DataDir(config.data_dir)
    host_key = asyncssh.read_private_key(data.human_host_key)
    machine_host_key = asyncssh.read_private_key(data.machine_host_key)
    first = credentials[0]
    config_arg = _relative(config.source)
    lines = ["", "pamgate demo is running.", ""]
    if human.port != PREFERRED_GATEWAY_PORT:
        lines += [
            f"!! Port {PREFERRED_GATEWAY_PORT} was taken, so this demo's gateway listens on port "
            f"{human.port}.",
            f"!! Use -p {human.port} wherever the README says -p {PREFERRED_GATEWAY_PORT}.",
            "",
        ]
    lines += [
        f"  gateway (human lane)  {human.address}:{human.port}",
        f"                        host key {host_key.get_fingerprint()}",
        f"  machine lane          {machine.address}:{machine.port} (certificates only)",
        f"                        host key {machine_host_key.get_fingerprint()}",
        f"  demo target {DEMO_TARGET:<9} OpenSSH sshd on 127.0.0.1:{target.port}",
        "                        (it trusts the gateway's upstream CA)",
        "",
        "Log in through the gateway (answer 'yes' to the host key the first time;",
        "it must match the fingerprint above), type the password, then the code:",
        "",
        f"    ssh -p {human.port} {first.user}:{DEMO_TARGET}@{human.address}",
        "",
        "and on the target run:  id",
        "",
        "Each code works once: for another login within the same 30 seconds, wait for the",
        "next code (a reused one is refused like a wrong one).",
        "",
        "Demo users:",
    ]
    for credential in credentials:
        enrolment = UserDirectory.enrolment(credential.user, credential.totp_secret)
        lines += [
            "",
            f"  {credential.user}  ({DEMO_USERS[credential.user][1]})",
            f"    password     {credential.password}",
            f"    TOTP secret  {credential.totp_secret}",
            f"    otpauth URI  {enrolment.uri}",
        ]
        qr = render_enrolment(enrolment, sys.stdout)
        if qr:
            lines.append(qr)
        code_snippet = f"import pyotp; print(pyotp.TOTP('{credential.totp_secret}').now())"
        lines.append(
            f'    no authenticator app? current code: {sys.executable} -c "{code_snippet}"'
        )
    pamgate = f"{_pamgate_command()} --config {config_arg}"
    machine_ca_line = data.machine_ca_key.with_name(data.machine_ca_key.name + ".pub").read_text()
    machine_ca_line = machine_ca_line.strip()
    lines += [
        "",
        f"Approval flow: {DEMO_APPROVAL_TARGET} needs an approver's OK. As alice, give a reason",
        "and wait:",
        "",
        f"    ssh -p {human.port} alice:{DEMO_APPROVAL_TARGET}@{human.address}",
        "",
        "then, in another terminal, approve as bob over SSH (his password, then his current",
        "code): in the console, where requests show up live (press a, then Enter),",
        "",
        f"    ssh -t -p {human.port} bob:console@{human.address}",
        "",
        "(Ctrl-Q quits the console; ? lists every key) or with commands:",
        "",
        f"    ssh -p {human.port} bob:admin@{human.address} request list",
        f"    ssh -p {human.port} bob:admin@{human.address} request approve N",
        "",
        "and alice's waiting ssh goes on. Or, while waiting, alice presses b for",
        "break-glass: immediate access with a written justification, announced and",
        f"reviewed afterwards by bob (ssh -p {human.port} bob:admin@{human.address} "
        "breakglass list).",
        "",
        f"Port forwarding: the {DEMO_TARGET} rule lets ssh -L reach the target's own sshd",
        f"(127.0.0.1:{target.port} as the target sees it), and nothing else:",
        "",
        f"    ssh -p {human.port} -N -L {DEMO_FORWARD_PORT}:127.0.0.1:{target.port} "
        f"alice:{DEMO_TARGET}@{human.address}",
        f"    ssh-keyscan -p {DEMO_FORWARD_PORT} 127.0.0.1     # in another terminal: the "
        "target's sshd answers",
        "",
        "Afterwards, replay what she did (or in the console: 4 Recordings):",
        "",
        f"    ssh -p {human.port} bob:admin@{human.address} recordings list",
        f"    ssh -t -p {human.port} bob:admin@{human.address} replay SESSION",
        "",
        "Machine lane: workloads log in with short-lived certificates from the machine CA",
        "(no passwords, no plain keys). Its public key, for reference:",
        "",
        f"    {machine_ca_line}",
        "",
        f"Register a workload for {DEMO_TARGET}, give it a 5-minute certificate, run its command:",
        "",
        f"    {pamgate} machine add {DEMO_WORKLOAD} --kind ci-pipeline --owner 'Demo team' \\",
        f"        --tech-owner you --purpose 'demo job' --target {DEMO_TARGET} --command uptime",
        f"    ssh-keygen -q -t ed25519 -N '' -f {DEMO_WORKLOAD}",
        f"    {pamgate} machine issue {DEMO_WORKLOAD} --pubkey {DEMO_WORKLOAD}.pub --ttl 5m "
        f"-o {DEMO_WORKLOAD}-cert.pub",
        f"    ssh -p {machine.port} -i {DEMO_WORKLOAD} -o CertificateFile={DEMO_WORKLOAD}-cert.pub "
        f"{DEMO_WORKLOAD}:{DEMO_TARGET}@{machine.address} uptime",
        "",
        "(the first time, check the host key against the machine lane's fingerprint above;",
        f"scripts pin it with: {pamgate} machine known-hosts > known_hosts)",
        "",
        "Anything else is refused and audited (try 'id'); see it all in the machine trail:",
        "",
        f"    {pamgate} audit tail --trail machine",
        "",
        f"Entitlement review: {DEMO_BROAD_WORKLOAD} was registered over-broad on purpose (any",
        "command, both targets, from anywhere). Who can reach what, and what is too broad:",
        "",
        f"    ssh -p {human.port} bob:admin@{human.address} access report",
        f"    ssh -p {human.port} bob:admin@{human.address} access stale",
        f"    ssh -p {human.port} bob:admin@{human.address} access suggest {DEMO_BROAD_WORKLOAD}",
        "",
        "then a review campaign that bob (its owner) decides:",
        "",
        f"    {pamgate} review start --of machines --due YYYY-MM-DD",
        f"    ssh -p {human.port} bob:admin@{human.address} review list 1",
        f"    ssh -p {human.port} bob:admin@{human.address} "
        "'review decide N suspend --note \"nothing uses it\"'",
        "",
        "Every other command works against this demo with its config file, e.g.:",
        "",
        f"    {pamgate} user list",
        "",
        f"Gateway log: {_relative(DataDir(config.data_dir).gateway_log)}",
        "Press Ctrl-C to stop the demo. Running it again reuses the same users and keys.",
        "",
    ]
    return "\n".join(lines)


def run_demo(
    data_dir: Path, *, gateway_port: int | None = None, machine_port: int | None = None
) -> None:
    """Set up (or reuse) the demo directory, start target and gateway, run until Ctrl-C."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _only_demo_in(data_dir):
        try:
            _run_demo(data_dir, gateway_port, machine_port)
        except KeyboardInterrupt:  # Ctrl-C before the gateway was up
            print("\npamgate demo stopped (interrupted while starting).")


@contextlib.contextmanager
def _only_demo_in(data_dir: Path) -> Iterator[None]:
    """Hold the directory's demo lock; PamgateError if another demo holds it.

    flock, not a pid file: the kernel drops the lock when the holder dies,
    so a crashed demo never blocks the next one.
    """
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise PamgateError(
                f"a demo is already running from {_relative(data_dir)} (pid {holder}); "
                "use it, stop it with Ctrl-C in its terminal, or start another one with "
                "--data-dir OTHER_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def _run_demo(data_dir: Path, gateway_port: int | None, machine_port: int | None) -> None:
    config_path = data_dir / "pamgate.toml"
    data = DataDir(data_dir)
    target_dir = data_dir / "demo-target"
    previous_ports = _outdated_demo_ports(config_path)
    if previous_ports is not None:
        gateway_port = gateway_port or previous_ports[0]
        target_port = previous_ports[1]
        config_path.unlink()
        print("pamgate demo: rewrote the config of an older demo version")
    else:
        target_port = None
    if not config_path.exists():
        port = gateway_port or (
            PREFERRED_GATEWAY_PORT if _port_is_free(PREFERRED_GATEWAY_PORT) else free_port()
        )
        target = OpenSSHTarget(
            target_dir,
            target_port or free_port(),
            data.upstream_ca_key.with_name("upstream_ca.pub"),
        )
        lane_port = machine_port or (
            PREFERRED_MACHINE_PORT if _port_is_free(PREFERRED_MACHINE_PORT) else free_port()
        )
        account = getpass.getuser()
        write_demo_config(data_dir, port, lane_port, target, account)
    config = load_config(config_path)
    for asked, listener, option in (
        (gateway_port, config.listeners.human, "--port"),
        (machine_port, config.listeners.machine, "--machine-port"),
    ):
        if asked is not None and asked != listener.port:
            raise PamgateError(
                f"{config_path} already uses port {listener.port}, not {option} {asked}; "
                "edit it or use another --data-dir"
            )
    for line in initialize(config):
        if line.startswith("created"):
            print(f"pamgate demo: {line}")
    configure_logging(config, to_stderr=False)
    credentials = ensure_demo_users(config)
    ensure_demo_machines(config)
    target_settings = config.target(DEMO_TARGET)
    if target_settings is None:
        raise PamgateError(f"{config_path}: the demo target {DEMO_TARGET!r} is missing")
    target = OpenSSHTarget(
        target_dir, target_settings.port, data.upstream_ca_key.with_name("upstream_ca.pub")
    )
    try:
        # Inside the try: a Ctrl-C while the target starts must not leave its sshd behind.
        target.start()
        node = GatewayNode(config)
        asyncio.run(
            run_until_signalled(
                node, on_ready=lambda: print(instructions(config, credentials, target), flush=True)
            )
        )
    finally:
        target.stop()
    print("pamgate demo stopped.")
