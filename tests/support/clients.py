"""SSH clients for the tests that a stock ``ssh`` cannot play: raw asyncssh, and ControlMaster."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncssh
import pyotp

from tests.support.gateway import Gateway, TestUser


class TotpLogin(asyncssh.SSHClient):
    """Answers the human lane's ``Password:`` and ``Verification code:`` prompts."""

    def __init__(self, user: TestUser) -> None:
        self._user = user

    def kbdint_auth_requested(self) -> str:
        return ""

    def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: list[tuple[str, bool]]
    ) -> list[str] | None:
        answers = []
        for prompt, _echo in prompts:
            if "Password" in prompt:
                answers.append(self._user.password or "")
            else:
                answers.append(pyotp.TOTP(self._user.totp_secret).now())
        return answers


def connect_as(gateway: Gateway, user: TestUser, destination: str) -> asyncssh.SSHClientConnection:
    """``async with connect_as(...) as conn``: a raw asyncssh login on the human lane."""
    return asyncssh.connect(  # type: ignore[return-value]
        "127.0.0.1", gateway.port, username=f"{user.name}:{destination}", known_hosts=None,
        client_factory=lambda: TotpLogin(user), preferred_auth="keyboard-interactive",
        client_keys=None, agent_path=None, config=None,
    )  # fmt: skip


@contextmanager
def control_master(
    gateway: Gateway, user: TestUser, destination: str, folder: Path
) -> Iterator[list[str]]:
    """A stock ``ssh`` ControlMaster connection logged in once; yields the ``ssh`` command
    line (without the remote command) that runs a new session over it."""
    socket_path = folder / f"mux-{user.name}"
    login = f"{user.name}:{destination}"
    base = gateway.ssh_command(login, extra=("-S", str(socket_path)))
    master = subprocess.Popen(
        [*base[:-1], "-M", "-N", "-o", "ControlPersist=no", base[-1]],
        env=gateway.ssh_env(user), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not socket_path.exists():
            if master.poll() is not None:
                raise AssertionError(f"the master did not log in: {master.stderr.read()!r}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise AssertionError("the master did not log in in time")
            time.sleep(0.05)
        yield [*base[:-1], "-o", "ControlMaster=no", base[-1]]
    finally:
        subprocess.run(
            ["ssh", "-S", str(socket_path), "-O", "exit", "x"], capture_output=True, timeout=10
        )
        master.kill()
        master.wait(timeout=10)
