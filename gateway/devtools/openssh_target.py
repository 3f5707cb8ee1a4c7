"""Run a stock OpenSSH ``sshd`` as a target that trusts the gateway's upstream CA.

Used by ``pamgate demo`` for its demo target and by the test suite for real
targets. The server listens on 127.0.0.1 only, accepts only certificates
signed by the given CA (``TrustedUserCAKeys``, no authorized_keys, no
passwords), and keeps everything (config, host key, pid file, log) in its
own work directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from gateway.errors import PamgateError

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


class TargetStartError(PamgateError):
    """The OpenSSH target could not be started."""


def find_program(name: str, candidates: tuple[str, ...] = ()) -> str:
    """Locate an OpenSSH program, or raise with the package to install."""
    found = shutil.which(name) or next((c for c in candidates if os.access(c, os.X_OK)), None)
    if found is None:
        package = "openssh-server" if name == "sshd" else "openssh-client"
        raise TargetStartError(
            f"OpenSSH '{name}' not found: install it (e.g. 'apt-get install {package}')"
        )
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for_port(
    host: str, port: int, timeout: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise TargetStartError(
                f"process exited with status {process.returncode} before listening"
            )
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TargetStartError(f"nothing listening on {host}:{port} after {timeout:.0f} s")


class OpenSSHTarget:
    """A private ``sshd`` on loopback, trusting one user CA."""

    def __init__(
        self,
        workdir: Path,
        port: int,
        trusted_ca_file: Path,
        *,
        host: str = "127.0.0.1",
        extra_config: Sequence[str] = (),
    ) -> None:
        self.workdir = Path(workdir)
        self.port = port
        self.host = host
        self.trusted_ca_file = Path(trusted_ca_file)
        #: More sshd_config lines (``RevokedKeys``, ``AuthorizedPrincipalsFile``...).
        self.extra_config = tuple(extra_config)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def host_key_path(self) -> Path:
        return self.workdir / "ssh_host_ed25519_key"

    @property
    def config_path(self) -> Path:
        return self.workdir / "sshd_config"

    @property
    def log_path(self) -> Path:
        return self.workdir / "sshd.log"

    def host_key_line(self) -> str:
        """The target's host public key (``type base64``), for pinning in the gateway config."""
        self.ensure_host_key()
        parts = (self.host_key_path.with_suffix(".pub")).read_text().split()
        return f"{parts[0]} {parts[1]}"

    def ensure_host_key(self) -> None:
        """Generate the host key with ``ssh-keygen`` unless it exists."""
        if self.host_key_path.exists():
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        keygen = find_program("ssh-keygen")
        subprocess.run(
            [
                keygen,
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "pamgate-target",
                "-f",
                str(self.host_key_path),
            ],
            check=True,
            stdin=subprocess.DEVNULL,
        )

    def write_config(self) -> None:
        """Write the sshd_config for this target."""
        self.config_path.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    f"ListenAddress {self.host}",
                    f"HostKey {self.host_key_path}",
                    f"PidFile {self.workdir / 'sshd.pid'}",
                    f"TrustedUserCAKeys {self.trusted_ca_file}",
                    "AuthorizedKeysFile none",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "UsePAM no",
                    "StrictModes no",
                    "PrintMotd no",
                    "PrintLastLog no",
                    "X11Forwarding no",
                    "AcceptEnv LANG LC_*",
                    "Subsystem sftp internal-sftp",
                    "LogLevel VERBOSE",
                    # Many sessions start at once through a gateway; sshd's default
                    # (10:30:100) would drop connections that are merely queued.
                    "MaxStartups 200",
                    *self.extra_config,
                    "",
                ]
            )
        )

    def start(self, timeout: float = 10.0) -> None:
        """Start sshd in the foreground (as a child) and wait until it listens."""
        sshd = find_program("sshd", SSHD_CANDIDATES)
        self.ensure_host_key()
        self.write_config()
        if os.geteuid() == 0:
            # sshd refuses to start as root without its privilege-separation directory.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.process = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        try:
            wait_for_port(self.host, self.port, timeout, self.process)
        except TargetStartError as exc:
            self.stop()
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise TargetStartError(f"sshd target on port {self.port}: {exc}\n{tail}") from None

    def kill_everything(self) -> None:
        """SIGKILL the daemon and every per-connection child: the target "dies"."""
        if self.process is None:
            return
        # Connection children call setsid() and rename themselves, so neither
        # the process group nor the command line finds them: walk the tree.
        for pid in [self.process.pid, *_descendants(self.process.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """Stop the daemon and its connections."""
        if self.process is None:
            return
        if self.process.poll() is None:
            connections = _descendants(self.process.pid)
            self.process.terminate()
            for pid in connections:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None


def _descendants(root: int) -> list[int]:
    """Process ids below ``root`` in the process tree (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [root]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found
