"""``pamgate demo`` driven as a user drives it: start it, read what it prints, stop it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pexpect


def start_demo(data_dir: Path, port: int, machine_port: int) -> tuple[pexpect.spawn, str]:
    """Start the demo on these ports; the child and everything it printed until ready."""
    child = pexpect.spawn(
        sys.executable,
        ["-m", "gateway.cli", "demo", "--data-dir", str(data_dir), "--port", str(port),
         "--machine-port", str(machine_port)],
        timeout=60, dimensions=(60, 200),
    )  # fmt: skip
    child.expect("Press Ctrl-C to stop the demo")
    return child, child.before.decode()


def stop_demo(child: pexpect.spawn) -> None:
    """Ctrl-C, as a user stops it; it must say so and exit."""
    child.sendcontrol("c")
    child.expect("pamgate demo stopped.")
    child.expect(pexpect.EOF)
    child.close()


def credentials(output: str, user: str) -> tuple[str, str]:
    """(password, TOTP secret) the demo printed for ``user``."""
    block = output[output.index(f"  {user}  (") :]
    password = re.search(r"password\s+(\S+)", block)
    secret = re.search(r"TOTP secret\s+([A-Z2-7]+)", block)
    assert password and secret, f"no credentials printed for {user}"
    return password.group(1), secret.group(1)
