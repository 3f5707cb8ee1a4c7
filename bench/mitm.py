"""ssh-mitm as a recording SSH proxy in front of a loopback sshd, for the throughput comparison.

ssh-mitm (a Python recording proxy, on PyPI) is installed into its own venv,
``bench/.venv-mitm`` (gitignored), never into pamgate's. It is started with
its session recording on: exec output (``--store-command-data``) and
terminal sessions (``--store-ssh-session``, asciinema format).

Two things differ from the pamgate and OpenSSH paths, both forced by ssh-mitm:
- ssh-mitm logs in upstream with one plain private key (``--auth-key``);
  paramiko cannot present an OpenSSH certificate, and the bench targets take
  only certificates. So ssh-mitm's target is a second sshd from the same
  binary and the same config, which also accepts that key.
- ssh-mitm's server is started through ``bench/mitm_launcher.py``, which
  skips one message OpenSSH clients before 9.6 reject (see there).

Known limits of ssh-mitm 6.0.1, measured by the relay benchmark: paramiko has
no chacha20-poly1305 (only the AES paths are compared), and a pty session
started with a command (``ssh -tt host cmd``) hangs, so its pty figure types
the command into a shell instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

from gateway.devtools.openssh_target import OpenSSHTarget, free_port, wait_for_port

MITM_VERSION = "6.0.1"
MITM_VENV = Path(__file__).resolve().parent / ".venv-mitm"
LAUNCHER = Path(__file__).resolve().parent / "mitm_launcher.py"
#: Ciphers paramiko (ssh-mitm's SSH library) can negotiate.
MITM_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")


class MitmUnavailable(RuntimeError):
    """ssh-mitm could not be installed or started; the message says why."""


def mitm_python() -> Path:
    """The venv's python with ssh-mitm installed, creating the venv on first use."""
    python = MITM_VENV / "bin" / "python"
    if python.exists() and _installed_version(python) == MITM_VERSION:
        return python
    print(f"installing ssh-mitm {MITM_VERSION} into {MITM_VENV} ...", file=sys.stderr, flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(MITM_VENV)
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"ssh-mitm=={MITM_VERSION}"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if result.returncode != 0 or _installed_version(python) != MITM_VERSION:
        why = result.stderr[-800:]
        raise MitmUnavailable(f"pip install ssh-mitm=={MITM_VERSION} failed: {why}")
    return python


def _installed_version(python: Path) -> str | None:
    result = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('ssh-mitm'))"],
        capture_output=True, text=True,
    )  # fmt: skip
    return result.stdout.strip() if result.returncode == 0 else None


class KeyTarget(OpenSSHTarget):
    """The bench target's sshd, same binary and config, that also accepts one plain key."""

    def __init__(self, workdir: Path, port: int, trusted_ca_file: Path, authorized_keys: Path):
        super().__init__(workdir, port, trusted_ca_file)
        self.authorized_keys = authorized_keys

    def write_config(self) -> None:
        super().write_config()
        text = self.config_path.read_text()
        self.config_path.write_text(
            text.replace("AuthorizedKeysFile none", f"AuthorizedKeysFile {self.authorized_keys}")
        )


@contextlib.contextmanager
def mitm_proxy(folder: Path, trusted_ca_file: Path) -> Iterator[tuple[int, Path, Path]]:
    """A running ssh-mitm recording proxy; yields (port, client key, recordings folder).

    The client logs in to ssh-mitm with the yielded key; ssh-mitm logs in to
    its sshd with the same key.
    """
    python = mitm_python()
    folder.mkdir(parents=True, exist_ok=True)
    key = folder / "mitm_ed25519"
    host_key = folder / "mitm_host_ed25519"
    for path in (key, host_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    target = KeyTarget(folder / "sshd", free_port(), trusted_ca_file, key.with_suffix(".pub"))
    target.start()
    port = free_port()
    recordings = folder / "recordings"
    log = open(folder / "ssh-mitm.log", "ab")  # noqa: SIM115 - handed to the child process
    process = subprocess.Popen(
        [str(python), str(LAUNCHER), "server", "--listen-address", "127.0.0.1",
         "--listen-port", str(port), "--remote-host", "127.0.0.1",
         "--remote-port", str(target.port), "--auth-key", str(key),
         "--host-key-ed25519", str(host_key), "--disable-remote-fingerprint-warning",
         "--session-log-dir", str(recordings), "--store-command-data", "--store-ssh-session",
         "--ssh-terminal-log-formatter", "asciinema", "--max-connections", "0"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        env={**os.environ, "XDG_STATE_HOME": str(folder / "state")},
    )  # fmt: skip
    log.close()
    try:
        try:
            wait_for_port("127.0.0.1", port, 60, process)
        except Exception as exc:
            tail = (folder / "ssh-mitm.log").read_text(errors="replace")[-1500:]
            raise MitmUnavailable(f"ssh-mitm did not start: {exc}\n{tail}") from None
        yield port, key, recordings
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        target.stop()


def recorded_bytes(recordings: Path) -> int:
    """Bytes ssh-mitm has stored so far (exec output and terminal sessions)."""
    return sum(path.stat().st_size for path in recordings.rglob("*") if path.is_file())
