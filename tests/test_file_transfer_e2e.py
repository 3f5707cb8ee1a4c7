"""File transfer and forwarding through the human lane with the stock tools.

Stock ``sftp``, ``scp`` (SFTP mode and legacy ``-O``), ``rsync`` and
``ssh -L`` against a real ``sshd`` target, under rules with each
``file_transfer`` mode, a size cap and a ``forward_local`` list. The audit
trail is checked against the files on disk (sizes and sha256).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.audit import AuditRecord, Trail
from gateway.openssh_target import free_port, wait_for_port
from tests.conftest import Gateway, TestUser, launch_gateway

pytestmark = pytest.mark.openssh

CAP = 100_000


def rules(echo_port: int) -> str:
    """Rules for the groups these tests use; they come before the default rules."""
    text = ""
    for group, mode, extra in (
        ("ft-allow", "allow", f'forward_local = ["127.0.0.1:{echo_port}"]'),
        ("ft-down", "download-only", ""),
        ("ft-up", "upload-only", ""),
        ("ft-deny", "deny", ""),
        ("ft-capped", "allow", f"file_transfer_max_bytes = {CAP}"),
    ):
        text += f"""
[[rules]]
id = "{group}"
groups = ["{group}"]
targets = ["web01"]
mode = "allow"
file_transfer = "{mode}"
{extra}
"""
    return text


class EchoServer:
    """A TCP echo server on loopback: the destination of forwarded connections."""

    def __init__(self) -> None:
        self.port = free_port()
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def close(self) -> None:
        self._sock.close()


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, echo: EchoServer) -> Iterator[Gateway]:
    with launch_gateway(tmp_path_factory.mktemp("transfer"), rules(echo.port)) as running:
        yield running


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


def run(gw: Gateway, user: TestUser, command: list[str], timeout: float = 60):
    return subprocess.run(
        command, env=gw.ssh_env(user), capture_output=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def sftp(gw: Gateway, user: TestUser, batch: str, tmp_path: Path):
    script = tmp_path / f"batch-{uuid.uuid4().hex[:8]}"
    script.write_text(batch)
    command = ["sftp", *ssh_options(gw, user), "-P", str(gw.port), "-b", str(script), "127.0.0.1"]
    return run(gw, user, command)


def file_events(
    gw: Gateway, user: TestUser, *, want: int = 1, action: str = "file.", timeout: float = 10
) -> list[AuditRecord]:
    """The user's file events, waiting until at least ``want`` of ``action`` are written."""
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


def remote_dir() -> Path:
    """A fresh directory on the target (the target is this machine, as root)."""
    path = Path("/tmp") / f"pamgate-ft-{uuid.uuid4().hex[:10]}"
    path.mkdir()
    return path


def random_file(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


# -- SFTP ------------------------------------------------------------------------------


def test_sftp_get_and_put_are_audited_with_size_and_hash(gw: Gateway, tmp_path: Path) -> None:
    user = gw.make_user(groups=("ft-allow",))
    remote = remote_dir()
    source_hash = random_file(remote / "report.bin", 300_000)
    local_hash = random_file(tmp_path / "upload.bin", 150_000)
    result = sftp(gw, user, (
        f"get {remote}/report.bin {tmp_path}/report.bin\n"
        f"put {tmp_path}/upload.bin {remote}/upload.bin\n"
        f"rename {remote}/upload.bin {remote}/renamed.bin\n"
        f"mkdir {remote}/sub\n"
        f"chmod 600 {remote}/renamed.bin\n"
        f"rm {remote}/report.bin\n"
    ), tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256((tmp_path / "report.bin").read_bytes()).hexdigest() == source_hash
    assert hashlib.sha256((remote / "renamed.bin").read_bytes()).hexdigest() == local_hash
    events = file_events(gw, user, want=2, action="file.closed")
    closed = {details(r)["direction"]: (r, details(r)) for r in events}
    record, down = closed["download"]
    assert down["path"] == f"{remote}/report.bin"
    assert (down["bytes"], down["sha256"], down["complete"]) == (300_000, source_hash, True)
    assert record.target == "web01" and record.authority == "policy:ft-allow"
    assert record.session_id
    _, up = closed["upload"]
    assert (up["bytes"], up["sha256"], up["complete"]) == (150_000, local_hash, True)
    actions = {r.action for r in file_events(gw, user, want=8)}
    assert {"file.opened", "file.renamed", "file.mkdir", "file.setstat", "file.removed"} <= actions


# -- forwarding ----------------------------------------------------------------------


def start_forward(gw: Gateway, user: TestUser, local_port: int, destination: str):
    command = ["ssh", *ssh_options(gw, user), "-p", str(gw.port), "-N",
               "-o", "ExitOnForwardFailure=yes",
               "-L", f"127.0.0.1:{local_port}:{destination}", "127.0.0.1"]  # fmt: skip
    process = subprocess.Popen(
        command, env=gw.ssh_env(user), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    wait_for_port("127.0.0.1", local_port, 20, process)
    return process


def test_local_forward_to_a_listed_destination_goes_through_and_is_audited(
    gw: Gateway, echo: EchoServer
) -> None:
    user = gw.make_user(groups=("ft-allow",))
    local_port = free_port()
    process = start_forward(gw, user, local_port, f"127.0.0.1:{echo.port}")
    try:
        payload = os.urandom(200_000)
        with socket.create_connection(("127.0.0.1", local_port), timeout=10) as conn:
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := conn.recv(65536):
                received += chunk
        assert received == payload
        # wait_for_port's probe was a forwarded connection too: two in all.
        closed = file_events(gw, user, want=2, action="forward.closed")
    finally:
        process.terminate()
        process.wait(timeout=10)
    [record] = [r for r in closed if details(r)["bytes_to_destination"] == len(payload)]
    facts = details(record)
    assert facts["destination"] == f"127.0.0.1:{echo.port}"
    assert facts["bytes_from_destination"] == len(payload) and facts["seconds"] > 0
    assert record.authority == "policy:ft-allow" and record.target == "web01"
    assert len(file_events(gw, user, action="forward.opened")) == 2


def test_local_forward_to_an_unlisted_destination_is_refused_and_audited(
    gw: Gateway, echo: EchoServer
) -> None:
    user = gw.make_user(groups=("ft-allow",))
    local_port = free_port()
    unlisted = gw.targets["web01"].port  # the target's sshd: reachable, but not listed
    process = start_forward(gw, user, local_port, f"127.0.0.1:{unlisted}")
    try:
        with socket.create_connection(("127.0.0.1", local_port), timeout=10) as conn:
            conn.settimeout(10)
            assert conn.recv(100) == b""  # closed without a byte from the destination
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert b"administratively prohibited" in stderr
    assert f"does not allow forwarding to 127.0.0.1:{unlisted}".encode() in stderr
    refused = file_events(gw, user, action="channel.refused")
    assert refused and details(refused[0])["destination"] == f"127.0.0.1:{unlisted}"
    assert not file_events(gw, user, action="forward.opened", timeout=0)
