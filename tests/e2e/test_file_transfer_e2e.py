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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.devtools.openssh_target import free_port, wait_for_port
from gateway.domain.approvals import AccessRequests
from gateway.domain.audit.trail import AuditLog
from gateway.store.database import Store
from tests.support.gateway import Gateway, TestUser, launch_gateway
from tests.support.transfer import (
    details,
    env_for,
    file_events,
    random_file,
    remote_dir,
    run,
    scp,
    sftp,
    ssh_options,
)

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
    return (
        text
        + """
[[rules]]
id = "ft-grant"
groups = ["ft-grant"]
targets = ["web01"]
mode = "approval"
approver_groups = ["leads"]
file_transfer = "download-only"
forward_local = ["127.0.0.1:{echo_port}"]
""".replace("{echo_port}", str(echo_port))
    )


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
    # The auditor's question, answered from the trail alone.
    listed = gw.cli("audit", "files", "--user", user.name, "--target", "web01", "--since", "1h",
                    "--json")  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    [copied] = [r for r in rows if r["action"] == "file.closed" and r["direction"] == "download"]
    assert copied["path"] == f"{remote}/report.bin" and copied["sha256"] == source_hash
    assert (copied["bytes"], copied["authority"]) == (300_000, "policy:ft-allow")
    assert {r["action"] for r in rows} >= {"file.closed", "file.renamed", "file.removed"}
    assert "file.opened" not in {r["action"] for r in rows}
    table = gw.cli("audit", "files", "--user", user.name, "--until", "2000-01-01")
    assert table.returncode == 0 and table.stdout == "" and "0 file events" in table.stderr
    table = gw.cli("audit", "files", "--user", user.name)
    assert f"download  300000  {source_hash}  complete  sftp  policy:ft-allow" in table.stdout


# -- forwarding ----------------------------------------------------------------------


def start_forward(gw: Gateway, user: TestUser, local_port: int, destination: str):
    command = ["ssh", *ssh_options(gw, user), "-p", str(gw.port), "-N",
               "-o", "ExitOnForwardFailure=yes",
               "-L", f"127.0.0.1:{local_port}:{destination}", "127.0.0.1"]  # fmt: skip
    process = subprocess.Popen(
        command, env=env_for(gw, user), stdin=subprocess.DEVNULL,
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
        process.kill()
        process.wait(timeout=10)
    assert process.stderr is not None
    stderr = process.stderr.read()
    assert b"administratively prohibited" in stderr
    assert f"does not allow forwarding to 127.0.0.1:{unlisted}".encode() in stderr
    refused = file_events(gw, user, action="channel.refused")
    assert refused and details(refused[0])["destination"] == f"127.0.0.1:{unlisted}"
    assert not file_events(gw, user, action="forward.opened", timeout=0)


@contextmanager
def access_requests(gw: Gateway) -> Iterator[AccessRequests]:
    """The approvals service on the gateway's database, from the test process."""
    store = Store(load_config(gw.config_path).database_url)
    try:
        yield AccessRequests(store, AuditLog(store))
    finally:
        store.dispose()


def approved_grant(gw: Gateway, user: TestUser) -> int:
    """An approved grant for ``user`` on web01 under the ft-grant rule; its id."""
    approver = gw.make_user(groups=("leads",))
    [rule] = [r for r in load_config(gw.config_path).rules if r.id == "ft-grant"]
    with access_requests(gw) as requests:
        request = requests.create(user=user.name, target="web01", account="root", rule=rule,
                                  reason="copy the logs", source="127.0.0.1")  # fmt: skip
        grant_id = requests.approve(request.id, approver.name, "ok").grant_id
    assert grant_id is not None
    return grant_id


def test_transfers_under_a_grant_carry_the_grant_as_authority(gw: Gateway, tmp_path: Path) -> None:
    user = gw.make_user(groups=("ft-grant",))
    grant_id = approved_grant(gw, user)
    remote = remote_dir()
    log_hash = random_file(remote / "app.log", 12_345)
    result = sftp(gw, user, f"get {remote}/app.log {tmp_path}/app.log\n", tmp_path)
    assert result.returncode == 0, result.stderr
    [closed] = file_events(gw, user, action="file.closed")
    assert closed.authority == f"grant:{grant_id}"
    assert details(closed)["sha256"] == log_hash


# -- policy modes -------------------------------------------------------------------


def test_download_only_refuses_uploads_with_a_clear_message(gw: Gateway, tmp_path: Path) -> None:
    user = gw.make_user(groups=("ft-down",))
    remote = remote_dir()
    random_file(remote / "notes.txt", 1000)
    random_file(tmp_path / "evil.bin", 1000)
    got = sftp(gw, user, f"get {remote}/notes.txt {tmp_path}/notes.txt\n", tmp_path)
    assert got.returncode == 0, got.stderr
    # "-" lets the batch go on after a refusal.
    put = sftp(gw, user, f"-put {tmp_path}/evil.bin {remote}/evil.bin\n-rm {remote}/notes.txt\n",
               tmp_path)  # fmt: skip
    assert b"Permission denied" in put.stderr
    assert b"rule ft-down allows file transfer download-only" in put.stderr
    assert not (remote / "evil.bin").exists() and (remote / "notes.txt").exists()
    refused = file_events(gw, user, want=2, action="file.refused")
    operations = {details(r)["operation"] for r in refused}
    assert f"upload of {remote}/evil.bin" in operations
    assert f"remove {remote}/notes.txt" in operations


def test_upload_only_refuses_downloads(gw: Gateway, tmp_path: Path) -> None:
    user = gw.make_user(groups=("ft-up",))
    remote = remote_dir()
    random_file(remote / "secret.txt", 1000)
    source_hash = random_file(tmp_path / "drop.bin", 5000)
    put = sftp(gw, user, f"put {tmp_path}/drop.bin {remote}/drop.bin\n", tmp_path)
    assert put.returncode == 0, put.stderr
    assert hashlib.sha256((remote / "drop.bin").read_bytes()).hexdigest() == source_hash
    got = sftp(gw, user, f"get {remote}/secret.txt {tmp_path}/secret.txt\n", tmp_path)
    assert got.returncode != 0
    assert b"rule ft-up allows file transfer upload-only" in got.stderr
    assert not (tmp_path / "secret.txt").exists()
    assert file_events(gw, user, action="file.refused")


def test_deny_refuses_the_sftp_subsystem(gw: Gateway, tmp_path: Path) -> None:
    for groups, rule in ((("ft-deny",), "ft-deny"), (("admins",), "admins-all")):
        user = gw.make_user(groups=groups)
        result = sftp(gw, user, "ls /\n", tmp_path)
        assert result.returncode != 0
        assert f"rule {rule} allows file transfer deny".encode() in result.stderr
        refused = file_events(gw, user, action="file.refused")
        assert refused and details(refused[0])["tool"] == "sftp"


def test_size_cap_stops_big_files_both_ways(gw: Gateway, tmp_path: Path) -> None:
    user = gw.make_user(groups=("ft-capped",))
    remote = remote_dir()
    small_hash = random_file(remote / "small.bin", CAP // 2)
    random_file(remote / "big.bin", CAP * 3)
    random_file(tmp_path / "big-up.bin", CAP * 3)
    big = sftp(gw, user, f"get {remote}/small.bin {tmp_path}/small.bin\n"
               f"get {remote}/big.bin {tmp_path}/big.bin\n", tmp_path)  # fmt: skip
    assert big.returncode != 0
    assert hashlib.sha256((tmp_path / "small.bin").read_bytes()).hexdigest() == small_hash
    assert f"larger than the {CAP}-byte cap of rule ft-capped".encode() in big.stderr
    partial = tmp_path / "big.bin"
    assert not partial.exists() or partial.stat().st_size <= CAP
    up = sftp(gw, user, f"put {tmp_path}/big-up.bin {remote}/big-up.bin\n", tmp_path)
    assert up.returncode != 0
    assert (remote / "big-up.bin").stat().st_size <= CAP
    closed = [details(r) for r in file_events(gw, user, want=3, action="file.closed")]
    capped = [c for c in closed if c["path"] in (f"{remote}/big.bin", f"{remote}/big-up.bin")]
    assert len(capped) == 2 and not any(c["complete"] or c["sha256"] for c in capped)
    assert len(file_events(gw, user, want=2, action="file.refused")) >= 2


def test_transfer_cut_midway_is_audited_incomplete(gw: Gateway, tmp_path: Path) -> None:
    user = gw.make_user(groups=("ft-allow",))
    remote = remote_dir()
    random_file(remote / "huge.bin", 20 * 1024 * 1024)
    script = tmp_path / "batch"
    script.write_text(f"get {remote}/huge.bin {tmp_path}/huge.bin\n")
    # -l limits the rate so the transfer is surely mid-way when the client is killed.
    command = ["sftp", *ssh_options(gw, user), "-P", str(gw.port), "-l", "8000",
               "-b", str(script), "127.0.0.1"]  # fmt: skip
    process = subprocess.Popen(
        command, env=env_for(gw, user), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert file_events(gw, user, action="file.opened", timeout=20), "the transfer never began"
        time.sleep(1.0)
    finally:
        process.kill()
        process.wait(timeout=10)
    try:
        [closed] = file_events(gw, user, action="file.closed")
        facts = details(closed)
        assert closed.outcome == "interrupted"
        assert facts["complete"] is False and facts["sha256"] is None
        assert 0 < facts["bytes"] < 20 * 1024 * 1024
        assert "closed with the file open" in closed.reason
    finally:
        (remote / "huge.bin").unlink()


# -- scp and rsync --------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-mode", "legacy-O"])
def test_scp_both_ways_is_audited_per_file(gw: Gateway, tmp_path: Path, legacy: bool) -> None:
    user = gw.make_user(groups=("ft-allow",))
    remote = remote_dir()
    down_hash = random_file(remote / "down.bin", 70_000)
    up_hash = random_file(tmp_path / "up.bin", 90_000)
    mode = ("-O",) if legacy else ()
    down = scp(gw, user, *mode, f"127.0.0.1:{remote}/down.bin", str(tmp_path / "down.bin"))
    assert down.returncode == 0, down.stderr
    up = scp(gw, user, *mode, str(tmp_path / "up.bin"), f"127.0.0.1:{remote}/up.bin")
    assert up.returncode == 0, up.stderr
    assert hashlib.sha256((remote / "up.bin").read_bytes()).hexdigest() == up_hash
    closed = {details(r)["direction"]: details(r)
              for r in file_events(gw, user, want=2, action="file.closed")}  # fmt: skip
    assert closed["download"]["sha256"] == down_hash and closed["download"]["bytes"] == 70_000
    assert closed["upload"]["sha256"] == up_hash and closed["upload"]["bytes"] == 90_000
    assert {c["tool"] for c in closed.values()} == {"scp" if legacy else "sftp"}


def test_legacy_scp_follows_the_mode_and_the_cap(gw: Gateway, tmp_path: Path) -> None:
    remote = remote_dir()
    random_file(remote / "data.bin", 1000)
    random_file(tmp_path / "up.bin", 1000)
    down_only = gw.make_user(groups=("ft-down",))
    refused = scp(gw, down_only, "-O", str(tmp_path / "up.bin"), f"127.0.0.1:{remote}/up.bin")
    assert refused.returncode != 0
    assert b"scp upload refused: rule ft-down allows file transfer download-only" in refused.stderr
    assert not (remote / "up.bin").exists()
    allowed = scp(gw, down_only, "-O", f"127.0.0.1:{remote}/data.bin", str(tmp_path / "d.bin"))
    assert allowed.returncode == 0, allowed.stderr
    capped = gw.make_user(groups=("ft-capped",))
    random_file(remote / "big.bin", CAP * 2)
    big = scp(gw, capped, "-O", f"127.0.0.1:{remote}/big.bin", str(tmp_path / "big.bin"))
    assert big.returncode != 0
    assert b"larger than the 100000-byte cap" in big.stderr
    assert file_events(gw, capped, action="file.refused")


def test_rsync_is_audited_and_held_to_the_mode(gw: Gateway, tmp_path: Path) -> None:
    remote = remote_dir()
    up_hash = random_file(tmp_path / "sync.bin", 50_000)
    user = gw.make_user(groups=("ft-allow",))
    ssh = " ".join(["ssh", *ssh_options(gw, user), "-p", str(gw.port)])
    result = run(gw, user, ["rsync", "-e", ssh, str(tmp_path / "sync.bin"),
                            f"127.0.0.1:{remote}/"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256((remote / "sync.bin").read_bytes()).hexdigest() == up_hash
    opened = file_events(gw, user, action="file.opened")
    assert opened and details(opened[0])["tool"] == "rsync"
    assert details(opened[0])["direction"] == "upload"
    closed = file_events(gw, user, action="file.closed")
    assert closed and details(closed[0])["bytes"] >= 50_000
    down_only = gw.make_user(groups=("ft-down",))
    ssh = " ".join(["ssh", *ssh_options(gw, down_only), "-p", str(gw.port)])
    refused = run(gw, down_only, ["rsync", "-e", ssh, str(tmp_path / "sync.bin"),
                                  f"127.0.0.1:{remote}/again.bin"])  # fmt: skip
    assert refused.returncode != 0
    assert b"rsync upload refused" in refused.stderr
    assert not (remote / "again.bin").exists()


def test_forward_under_a_grant_closes_when_the_grant_is_revoked(
    gw: Gateway, echo: EchoServer
) -> None:
    user = gw.make_user(groups=("ft-grant",))
    grant_id = approved_grant(gw, user)
    local_port = free_port()
    process = start_forward(gw, user, local_port, f"127.0.0.1:{echo.port}")
    try:
        with socket.create_connection(("127.0.0.1", local_port), timeout=10) as conn:
            conn.sendall(b"ping")
            assert conn.recv(10) == b"ping"
            with access_requests(gw) as requests:
                requests.revoke(grant_id, "tests", "incident 7")
            started = time.monotonic()
            conn.settimeout(10)
            assert conn.recv(10) == b""  # closed by the gateway
            assert time.monotonic() - started < 5
        revoked = [r for r in file_events(gw, user, want=2, action="forward.closed")
                   if "revoked" in r.reason]  # fmt: skip
    finally:
        process.kill()
        process.wait(timeout=10)
    assert revoked and revoked[0].authority == f"grant:{grant_id}"
    assert "incident 7" in revoked[0].reason


def test_forward_under_an_allow_rule_ends_when_the_user_is_disabled(
    gw: Gateway, echo: EchoServer
) -> None:
    """An open ``ssh -L`` is not a standing decision: disabling the user closes what is open
    and refuses every new forwarded connection on the same SSH connection."""
    user = gw.make_user(groups=("ft-allow",))
    local_port = free_port()
    process = start_forward(gw, user, local_port, f"127.0.0.1:{echo.port}")
    try:
        with socket.create_connection(("127.0.0.1", local_port), timeout=10) as conn:
            conn.sendall(b"ping")
            assert conn.recv(10) == b"ping"
            assert gw.cli("user", "disable", user.name).returncode == 0
            disabled_at = time.monotonic()
            conn.settimeout(10)
            assert conn.recv(10) == b""  # closed by the gateway
            assert time.monotonic() - disabled_at < 4
        with socket.create_connection(("127.0.0.1", local_port), timeout=10) as again:
            again.settimeout(10)
            try:
                again.sendall(b"ping")
                reply = again.recv(10)
            except ConnectionResetError:
                reply = b""
            assert reply == b""  # the ssh client's channel open was refused
        closed = [r for r in file_events(gw, user, want=2, action="forward.closed")
                  if "was disabled" in r.reason]  # fmt: skip
        refused = file_events(gw, user, want=1, action="channel.refused")
    finally:
        process.kill()
        process.wait(timeout=10)
    assert closed, "the open forward was closed with the reason"
    assert refused and "is disabled" in refused[0].details
