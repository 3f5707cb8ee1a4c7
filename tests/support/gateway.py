"""The gateway under test: a real ``pamgate serve`` process, real OpenSSH targets,
real ssh clients, all on loopback.

The gateway runs as a subprocess with a config written here; targets are stock
``sshd`` processes trusting the gateway's upstream CA; logins use the stock ``ssh``
client, answering keyboard-interactive prompts through ``SSH_ASKPASS``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pexpect
import pyotp

from gateway.config import load_config
from gateway.datadir import DataDir, initialize
from gateway.devtools.openssh_target import (
    OpenSSHTarget,
    TargetStartError,
    free_port,
    wait_for_port,
)
from gateway.domain.audit.trail import AuditLog, Trail
from gateway.domain.identities import UserDirectory
from gateway.store.database import Store
from tests.support.database import TEST_DATABASE_ENV, fresh_database
from tests.support.secrets import data_dir_secret_box

SSH = shutil.which("ssh")


SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)


ASKPASS_SOURCE = """#!{python}
# Answers ssh's keyboard-interactive prompts for the tests, and logs them.
import os, re, sys
import pyotp
# OpenSSH prefixes keyboard-interactive prompts with "(user@host) ".
prompt = re.sub(r"^\\(.*?\\) ", "", sys.argv[1] if len(sys.argv) > 1 else "")
log = os.environ.get("PG_ASKPASS_LOG")
if log:
    with open(log, "a") as handle:
        handle.write(prompt.strip() + "\\n")
if "Password" in prompt:
    print(os.environ.get("PG_PASSWORD", ""))
elif "Verification code" in prompt:
    print(os.environ.get("PG_TOTP_CODE") or pyotp.TOTP(os.environ["PG_TOTP_SECRET"]).now())
else:
    sys.exit(1)
"""


@dataclass
class TestUser:
    """A user created for one test, with their factors."""

    __test__ = False  # not a test class, despite the name

    name: str
    password: str | None
    totp_secret: str
    key_path: Path | None = None


@dataclass
class Gateway:
    """A running ``pamgate serve`` and what tests need to talk to it."""

    root: Path
    config_path: Path
    port: int
    machine_port: int
    known_hosts: Path
    askpass: Path
    process: subprocess.Popen[bytes]
    targets: dict[str, OpenSSHTarget]
    users: UserDirectory
    audit: AuditLog
    _names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def log_path(self) -> Path:
        return DataDir(load_config(self.config_path).data_dir).gateway_log

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def make_user(
        self, *, groups: tuple[str, ...] = ("admins",), password: bool = True, key: bool = False
    ) -> TestUser:
        """Create a fresh user (fresh, so one test's TOTP codes never collide with another's)."""
        name = f"u{next(self._names)}_{os.getpid()}"
        secret_password = f"pw-{name}-secret" if password else None
        key_path = None
        public_keys = []
        if key:
            key_path = self.root / f"{name}_ed25519"
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key_path)], check=True
            )
            public_keys.append(key_path.with_suffix(".pub").read_text())
        enrolment = self.users.add_user(
            name, actor="tests", groups=groups, password=secret_password, public_keys=public_keys
        )
        return TestUser(name, secret_password, enrolment.secret, key_path)

    def ssh_command(
        self,
        login: str,
        *,
        key: Path | None = None,
        source: str | None = None,
        extra: tuple[str, ...] = (),
    ) -> list[str]:
        """An ``ssh`` command line for the gateway, with no user config or agent involved."""
        methods = "publickey,keyboard-interactive" if key else "keyboard-interactive"
        # ssh keeps the first value given for an option, so the test's own
        # options come before the defaults.
        command = [
            "ssh",
            *extra,
            "-F", "/dev/null",
            "-p", str(self.port),
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentityAgent=none",
            "-o", "IdentitiesOnly=yes",
            "-o", f"PreferredAuthentications={methods}",
            "-o", "NumberOfPasswordPrompts=1",
            "-o", "ConnectTimeout=10",
        ]  # fmt: skip
        if key:
            command += ["-i", str(key)]
        if source:
            command += ["-b", source]
        return [*command, f"{login}@127.0.0.1"]

    def ssh_env(
        self,
        user: TestUser,
        *,
        code: str | None = None,
        password: str | None = None,
        log: Path | None = None,
    ) -> dict[str, str]:
        """Environment that makes ssh answer prompts through the askpass helper."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("SSH_")}
        env.update(
            SSH_ASKPASS=str(self.askpass),
            SSH_ASKPASS_REQUIRE="force",
            DISPLAY=env.get("DISPLAY", ":0"),
            PG_PASSWORD=password if password is not None else (user.password or ""),
            PG_TOTP_SECRET=user.totp_secret,
        )
        if code is not None:
            env["PG_TOTP_CODE"] = code
        if log is not None:
            env["PG_ASKPASS_LOG"] = str(log)
        return env

    def run_ssh(
        self,
        user: TestUser,
        destination: str | None,
        remote_command: str | None = None,
        *,
        code: str | None = None,
        password: str | None = None,
        use_key: bool = False,
        source: str | None = None,
        extra: tuple[str, ...] = (),
        log: Path | None = None,
        timeout: float = 30,
        input_bytes: bytes | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Log in as ``user`` to ``destination`` (``[account@]target``) and run a command."""
        login = user.name if destination is None else f"{user.name}:{destination}"
        command = self.ssh_command(
            login, key=user.key_path if use_key else None, source=source, extra=extra
        )
        if remote_command is not None:
            command.append(remote_command)
        return subprocess.run(
            command,
            env=self.ssh_env(user, code=code, password=password, log=log),
            input=input_bytes,
            stdin=None if input_bytes is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )

    def start_ssh(
        self, user: TestUser, destination: str, remote_command: str
    ) -> subprocess.Popen[bytes]:
        """Start ``ssh`` running ``remote_command`` without waiting (stdout/stderr piped)."""
        return subprocess.Popen(
            self.ssh_command(f"{user.name}:{destination}") + [remote_command],
            env=self.ssh_env(user),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def restart(self) -> None:
        """SIGKILL the gateway (if running) and start it again on the same config."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = serve(self.config_path)

    @property
    def data_dir(self) -> Path:
        return load_config(self.config_path).data_dir

    def cli(self, *args: str, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a ``pamgate`` command against this gateway's config."""
        return run_cli("--config", str(self.config_path), *args, input_text=input_text)


def spawn_shell(
    gateway: Gateway, user: TestUser, destination: str, *, rows: int = 24, cols: int = 80
) -> pexpect.spawn:
    """A stock ``ssh -tt`` to ``destination`` (empty: the menu) in a real pty."""
    login = f"{user.name}:{destination}" if destination else user.name
    command = gateway.ssh_command(login, extra=("-tt",))
    env = gateway.ssh_env(user)
    env["TERM"] = "xterm-256color"
    child = pexpect.spawn(command[0], command[1:], env=env, dimensions=(rows, cols), timeout=15)
    return child


def set_prompt(child: pexpect.spawn) -> None:
    """Give the remote shell a prompt tests can wait for: ``PG> ``."""
    child.sendline("export PS1='PG''> '")
    child.expect("PG> ")


def run_cli(
    *args: str,
    input_text: str | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``pamgate ARGS`` in a subprocess (the real entry point), with ``env`` added to
    this process's environment."""
    environment = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        input=input_text,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        stdin=None if input_text is not None else subprocess.DEVNULL,
        env=environment,
    )


def write_askpass(path: Path) -> Path:
    path.write_text(ASKPASS_SOURCE.format(python=sys.executable))
    path.chmod(0o755)
    return path


def gateway_config_text(
    port: int,
    machine_port: int,
    targets: dict[str, tuple[int, str]],
    extra: str = "",
    database_url: str = "",
    human_listener: str = "",
) -> str:
    """A test gateway config: fast failure delays, a low per-(user, address) threshold, and a
    per-address one high enough for a whole suite run from 127.0.0.1."""
    text = (
        f"""
[gateway]
name = "test-node"
data_dir = "data"
database_url = "{database_url}"

[listeners.human]
address = "127.0.0.1"
port = {port}
{human_listener}

[listeners.machine]
address = "127.0.0.1"
port = {machine_port}

[auth]
user_source_failures = 3
source_failures = 1000
backoff_seconds = 120
failure_delay_seconds = 0.05
"""
        + extra
    )
    for name, (target_port, host_key) in targets.items():
        text += f"""
[[targets]]
name = "{name}"
host = "127.0.0.1"
port = {target_port}
accounts = ["root", "nobody"]
default_account = "root"
host_keys = ["{host_key}"]
"""
    text += """
[[rules]]
id = "admins-all"
groups = ["admins"]
targets = ["*"]
mode = "allow"

[[rules]]
id = "needs-one"
groups = ["requesters"]
targets = ["web01"]
mode = "approval"
approver_groups = ["leads"]
break_glass = true
break_glass_max_duration = "10m"

[[rules]]
id = "needs-two"
groups = ["cautious"]
targets = ["web01"]
mode = "approval"
approver_groups = ["leads"]
approvals_required = 2

[[rules]]
id = "minute-grant"
groups = ["minute"]
targets = ["web01"]
mode = "approval"
approver_groups = ["leads"]
default_duration = "62s"
max_duration = "62s"

[[rules]]
id = "short-grant"
groups = ["brief"]
targets = ["web01"]
mode = "approval"
approver_groups = ["leads"]
default_duration = "4s"
max_duration = "4s"
"""
    return text


def serve(
    config_path: Path,
    *,
    open_files: int | None = None,
    workers: int | None = None,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``pamgate serve`` and wait until both lanes listen.

    ``open_files``: start it with this open-files soft limit (the hard limit stays).
    ``workers``: ``serve --workers``; None: the config's ``[node] workers`` if it
    sets one, else 1 (one process: the suite does not pay for workers it does not
    test). ``new_session``: in a process group of its own.
    """
    if workers is None and "workers" not in load_config(config_path).node.model_fields_set:
        workers = 1
    log = config_path.with_suffix(".serve.log")

    def limit_open_files() -> None:
        if open_files is not None:
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, hard))

    with log.open("ab") as output:  # why a node did not start is in the test's failure
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "--config", str(config_path), "serve",
             *(["--workers", str(workers)] if workers is not None else [])],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=limit_open_files if open_files is not None else None,
            start_new_session=new_session,
        )  # fmt: skip
    listeners = load_config(config_path).listeners
    try:
        for lane in (listeners.human, listeners.machine):
            if lane.enabled:
                wait_for_port(lane.address, lane.port, 20, process)
    except TargetStartError as exc:
        tail = log.read_text(errors="replace")[-2000:]
        raise TargetStartError(f"{exc}; pamgate serve said:\n{tail}") from None
    return process


@contextmanager
def launch_gateway(
    root: Path, extra_config: str = "", database_url: str | None = None, *,
    human_listener: str = "", open_files: int | None = None, workers: int | None = None,
    new_session: bool = False,
) -> Iterator[Gateway]:  # fmt: skip
    """A gateway with four targets: web01, mortal (killed by a test), badkey, deadport.

    Its store is ``database_url``, else as :func:`database_url_for_test` picks.
    ``human_listener`` adds lines to ``[listeners.human]``; ``open_files`` is the
    open-files soft limit ``pamgate serve`` starts with; ``workers`` its relay worker
    processes and ``new_session`` its process group (see :func:`serve`).
    """
    if database_url is None and os.environ.get(TEST_DATABASE_ENV):
        with (
            fresh_database(os.environ[TEST_DATABASE_ENV]) as url,
            launch_gateway(root, extra_config, url, human_listener=human_listener,
                           open_files=open_files, workers=workers,
                           new_session=new_session) as running,
        ):  # fmt: skip
            yield running
        return
    ca_pub = root / "data" / "keys" / "upstream_ca.pub"
    web01 = OpenSSHTarget(root / "web01", free_port(), ca_pub)
    mortal = OpenSSHTarget(root / "mortal", free_port(), ca_pub)
    impostor = OpenSSHTarget(root / "impostor", 1, ca_pub)
    port, machine_port = free_port(), free_port()
    config_path = root / "pamgate.toml"
    config_path.write_text(
        gateway_config_text(
            port,
            machine_port,
            {
                "web01": (web01.port, web01.host_key_line()),
                "mortal": (mortal.port, mortal.host_key_line()),
                # Points at web01's port but pins a different host key.
                "badkey": (web01.port, impostor.host_key_line()),
                "deadport": (free_port(), web01.host_key_line()),
            },
            extra_config,
            database_url or "",
            human_listener,
        )
    )
    config = load_config(config_path)
    initialize(config)
    web01.start()
    mortal.start()
    known_hosts = root / "known_hosts"
    data = DataDir(config.data_dir)
    human_pub = data.human_host_key.with_name(data.human_host_key.name + ".pub").read_text()
    machine_pub = data.machine_host_key.with_name(data.machine_host_key.name + ".pub").read_text()
    known_hosts.write_text(
        f"[127.0.0.1]:{port} {human_pub}[127.0.0.1]:{machine_port} {machine_pub}"
    )
    process = serve(config_path, open_files=open_files, workers=workers, new_session=new_session)
    store = Store(config.database_url)
    running = None
    try:
        running = Gateway(
            root=root,
            config_path=config_path,
            port=port,
            machine_port=machine_port,
            known_hosts=known_hosts,
            askpass=write_askpass(root / "askpass.py"),
            process=process,
            targets={"web01": web01, "mortal": mortal},
            users=UserDirectory(
                store, AuditLog(store), secret_box=data_dir_secret_box(str(data.totp_key))
            ),
            audit=AuditLog(store),
        )
        yield running
    finally:
        process = running.process if running else process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        web01.stop()
        mortal.stop()
        store.dispose()


def wait_for_log(gateway: Gateway, needle: str, timeout: float = 5.0) -> str:
    """Wait until the gateway log contains ``needle``; return the log."""
    deadline = time.monotonic() + timeout
    while True:
        text = gateway.log_text()
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def current_code(user: TestUser) -> str:
    """The user's TOTP code right now."""
    return pyotp.TOTP(user.totp_secret).now()


def start_waiting(
    gateway: Gateway, user: TestUser, command: str
) -> tuple[subprocess.Popen[bytes], int]:
    """Log in to a target that needs approval; return the waiting ssh and its request id."""
    process = gateway.start_ssh(user, "web01", command)
    assert process.stderr is not None
    line = process.stderr.readline().decode()
    found = re.search(r"Request #(\d+) for web01 \(root\) is waiting for approval by leads", line)
    assert found, line
    return process, int(found.group(1))


def decide(gateway: Gateway, verb: str, request_id: int, approver: TestUser, comment: str = "ok",
           *, next_code: bool = False):  # fmt: skip
    # A code is accepted once: someone who just logged in uses the next step's code.
    code = (
        pyotp.TOTP(approver.totp_secret).at(time.time() + 30)
        if next_code
        else current_code(approver)
    )
    return gateway.cli(
        "request", verb, str(request_id), "--as", approver.name, "--password-stdin",
        "--totp", code, "--comment", comment,
        input_text=f"{approver.password}\n",
    )  # fmt: skip


def session_end(gateway: Gateway, user: str, timeout: float = 10) -> dict[str, object]:
    """The details of ``user``'s session.end event (and its session id), once it is written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in gateway.audit.events(Trail.HUMAN):
            if record.action == "session.end" and record.actor == user:
                return {**json.loads(record.details), "session": record.session_id}
        time.sleep(0.1)
    raise AssertionError(f"no session.end for {user}")
