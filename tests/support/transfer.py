"""File transfers through a test gateway: stock tools, a raw SFTP client, and the trail.

The stock tools (``sftp``, ``scp``, ``rsync``, ``ssh``) log in with
keyboard-interactive through the askpass helper; :func:`raw_connection`
logs in with asyncssh, for tests that send exactly the bytes they want
(:class:`RawChannel`). :func:`file_events` reads what the gateway wrote to
the trail; :func:`audited_bytes` asks ``pamgate audit files`` what crossed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncssh
import pyotp

from gateway.domain.audit.trail import AuditRecord, Trail
from tests.support.gateway import Gateway, TestUser

_last_step: dict[str, int] = {}


def next_code(user: TestUser) -> str:
    """A TOTP code not used yet: each is accepted once, and 30 s either side of now.

    So one user can log in twice in a row without waiting: now, and the next step.
    """
    now = int(time.time()) // 30
    step = max(_last_step.get(user.name, 0) + 1, now)
    if step > now + 1:
        time.sleep((step - 1) * 30 - time.time() + 0.5)
    _last_step[user.name] = step
    return pyotp.TOTP(user.totp_secret).at(step * 30)


def ssh_options(gw: Gateway, user: TestUser) -> list[str]:
    """Options for ssh, sftp and scp: no user config, the test's known_hosts, our login."""
    return [
        "-F", "/dev/null",
        "-o", f"UserKnownHostsFile={gw.known_hosts}",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "IdentityAgent=none",
        "-o", "PreferredAuthentications=keyboard-interactive",
        "-o", "NumberOfPasswordPrompts=1",
        # sftp -b turns BatchMode on, which would stop the keyboard-interactive prompts.
        "-o", "BatchMode=no",
        # NAME:TARGET in a user@host argument would be split at its colon.
        "-o", f"User={user.name}:web01",
    ]  # fmt: skip


def env_for(gw: Gateway, user: TestUser) -> dict[str, str]:
    return gw.ssh_env(user, code=next_code(user))


def run(
    gw: Gateway,
    user: TestUser,
    command: list[str],
    timeout: float = 60,
    input_bytes: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        command, env=env_for(gw, user), capture_output=True, timeout=timeout,
        input=input_bytes, stdin=None if input_bytes is not None else subprocess.DEVNULL,
    )  # fmt: skip


def sftp(
    gw: Gateway, user: TestUser, batch: str, tmp_path: Path, *options: str
) -> subprocess.CompletedProcess[bytes]:
    script = tmp_path / f"batch-{uuid.uuid4().hex[:8]}"
    script.write_text(batch)
    command = ["sftp", *ssh_options(gw, user), *options, "-P", str(gw.port), "-b", str(script),
               "127.0.0.1"]  # fmt: skip
    return run(gw, user, command)


def scp(gw: Gateway, user: TestUser, *args: str) -> subprocess.CompletedProcess[bytes]:
    return run(gw, user, ["scp", *ssh_options(gw, user), "-P", str(gw.port), *args])


def rsync(gw: Gateway, user: TestUser, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``rsync ARGS`` with the gateway as the remote shell (hosts are ``127.0.0.1:PATH``)."""
    shell = " ".join(["ssh", *ssh_options(gw, user), "-p", str(gw.port)])
    return run(gw, user, ["rsync", "-e", shell, *args])


def ssh_exec(
    gw: Gateway, user: TestUser, command: str, input_bytes: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``ssh gw COMMAND`` (no pty), with ``input_bytes`` on its stdin."""
    ssh = ["ssh", *ssh_options(gw, user), "-p", str(gw.port), "127.0.0.1", command]
    return run(gw, user, ssh, input_bytes=input_bytes)


def file_events(
    gw: Gateway, user: TestUser, *, want: int = 1, action: str = "file.", timeout: float = 10
) -> list[AuditRecord]:
    """The user's events whose action starts with ``action``, waiting for ``want`` of them."""
    deadline = time.monotonic() + timeout
    while True:
        found = [
            r for r in gw.audit.events(Trail.HUMAN)
            if r.actor == user.name and r.action.startswith(action)
        ]  # fmt: skip
        if len(found) >= want or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def details(record: AuditRecord) -> dict[str, object]:
    return json.loads(record.details)


def audited_bytes(gw: Gateway, user: TestUser, direction: str | None = None) -> int:
    """What ``pamgate audit files`` says crossed for ``user``: the sum of ``file.closed`` bytes."""
    listed = gw.cli("audit", "files", "--user", user.name, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    return sum(
        row["bytes"] or 0
        for row in rows
        if row["action"] == "file.closed" and direction in (None, row["direction"])
    )


def session_ends_after_file_events(gw: Gateway, user: TestUser) -> None:
    """Every ``file.*`` event of the user's sessions comes before its ``session.end``."""
    ended: set[str] = set()
    for record in gw.audit.events(Trail.HUMAN):
        if record.actor != user.name or record.session_id is None:
            continue
        if record.action == "session.end":
            ended.add(record.session_id)
        elif record.action.startswith("file."):
            assert record.session_id not in ended, f"{record.action} after session.end"


def remote_dir() -> Path:
    """A fresh directory on the target (the target is this machine, as root)."""
    path = Path("/tmp") / f"pamgate-ft-{uuid.uuid4().hex[:10]}"
    path.mkdir()
    return path


def random_file(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- a client that sends exactly the bytes it wants ------------------------------------


class _Login(asyncssh.SSHClient):
    """Answers the gateway's keyboard-interactive prompts: password, then a TOTP code."""

    def __init__(self, password: str, code: str) -> None:
        self._answers = {"Password": password, "Verification code": code}

    def kbdint_auth_requested(self) -> str:
        return ""

    def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: list[tuple[str, bool]]
    ) -> list[str] | None:
        answers = []
        for prompt, _echo in prompts:
            found = [answer for key, answer in self._answers.items() if key in prompt]
            if not found:
                return None
            answers.append(found[0])
        return answers


@asynccontextmanager
async def raw_connection(
    gw: Gateway, user: TestUser, target: str = "web01"
) -> AsyncIterator[asyncssh.SSHClientConnection]:
    """An asyncssh connection to ``user:target`` through the gateway."""
    login = _Login(user.password or "", next_code(user))
    async with asyncssh.connect(
        "127.0.0.1", gw.port, username=f"{user.name}:{target}", known_hosts=str(gw.known_hosts),
        client_factory=lambda: login, preferred_auth="keyboard-interactive", client_keys=None,
        agent_path=None,
    ) as conn:  # fmt: skip
        yield conn


class RawChannel(asyncssh.SSHClientSession[bytes]):
    """A session channel whose bytes the test writes and reads itself."""

    def __init__(self) -> None:
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.closed = asyncio.Event()
        self._arrived = asyncio.Event()
        self.chan: asyncssh.SSHClientChannel[bytes] | None = None

    @classmethod
    async def open(
        cls,
        conn: asyncssh.SSHClientConnection,
        *,
        subsystem: str | None = None,
        command: str | None = None,
    ) -> RawChannel:
        chan, session = await conn.create_session(
            cls, command or (), subsystem=subsystem or (), encoding=None
        )
        session.chan = chan
        return session

    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        self.chan = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        (self.stderr if datatype == asyncssh.EXTENDED_DATA_STDERR else self.stdout).extend(data)
        self._arrived.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        self._arrived.set()

    def send(self, data: bytes) -> None:
        assert self.chan is not None
        self.chan.write(data)

    async def packet(self, timeout: float = 20) -> bytes | None:
        """The next whole SFTP packet from the target (with its length), or None once closed."""
        async with asyncio.timeout(timeout):
            while True:
                if len(self.stdout) >= 4:
                    length = int.from_bytes(self.stdout[:4], "big")
                    if len(self.stdout) >= 4 + length:
                        whole = bytes(self.stdout[: 4 + length])
                        del self.stdout[: 4 + length]
                        return whole
                if self.closed.is_set():
                    return None
                self._arrived.clear()
                await self._arrived.wait()

    async def wait_closed(self, timeout: float = 20) -> int | None:
        """Wait for the channel to close; its exit status."""
        async with asyncio.timeout(timeout):
            await self.closed.wait()
        assert self.chan is not None
        return self.chan.get_exit_status()
