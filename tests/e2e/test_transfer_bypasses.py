"""File-transfer rules against a hostile client: each way around them that was found, closed.

The rules are the demo's: ``download-only`` with a 100,000-byte cap,
``upload-only``, ``deny``. Each test uses the real client the bypass was
found with (stock ``sftp``, ``rsync``, ``ssh`` running Ansible's ``dd``
fallback, PuTTY's ``pscp``, asyncssh's SFTP client) or, for what no stock
client sends, a raw SFTP v3 client writing exactly the bytes it wants.
Every test checks the trail against the bytes that really crossed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pexpect
import pytest

from gateway.ssh.transfer.sftp import OpenFlags, PacketType
from tests.support.gateway import Gateway, launch_gateway
from tests.support.sftp_wire import init, open_request, read_request, write_request
from tests.support.transfer import (
    RawChannel,
    audited_bytes,
    details,
    file_events,
    next_code,
    random_file,
    raw_connection,
    remote_dir,
    rsync,
    session_ends_after_file_events,
    sftp,
    sha256_of,
    ssh_exec,
)

pytestmark = pytest.mark.openssh

CAP = 100_000
SFTP_SERVER = "/usr/lib/openssh/sftp-server"

RULES = "".join(
    f"""
[[rules]]
id = "{group}"
groups = ["{group}"]
targets = ["web01"]
mode = "allow"
file_transfer = "{mode}"
{extra}
"""
    for group, mode, extra in (
        ("by-allow", "allow", ""),
        ("by-down", "download-only", ""),
        ("by-down-capped", "download-only", f"file_transfer_max_bytes = {CAP}"),
        ("by-capped", "allow", f"file_transfer_max_bytes = {CAP}"),
        ("by-up", "upload-only", ""),
        ("by-deny", "deny", ""),
    )
)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with launch_gateway(tmp_path_factory.mktemp("bypasses"), RULES) as running:
        yield running


# -- the SFTP protocol's state: request ids and handles ----------------------------------


async def _sftp_channel(conn: asyncssh.SSHClientConnection) -> RawChannel:
    channel = await RawChannel.open(conn, subsystem="sftp")
    channel.send(init())
    version = await channel.packet()
    assert version is not None and version[4] == PacketType.VERSION
    return channel


async def test_a_reused_request_id_ends_the_session_before_anything_hides(
    gw: Gateway,
) -> None:
    """OPEN of a decoy and OPEN of the real file under one id, in one write.

    The gateway used to take the decoy's HANDLE for the real file's, and
    forward the real HANDLE unchecked: its reads then escaped the cap and
    the audit.
    """
    user = gw.make_user(groups=("by-down-capped",))
    remote = remote_dir()
    random_file(remote / "big.bin", 3 * CAP)
    async with raw_connection(gw, user) as conn:
        channel = await _sftp_channel(conn)
        channel.send(
            open_request(7, "/etc/hostname", OpenFlags.READ)
            + open_request(7, f"{remote}/big.bin", OpenFlags.READ)
        )
        replies = [await channel.packet(), await channel.packet()]
        # Whatever handle came back (none should), read the big file through it.
        handles = [r[13:] for r in replies if r is not None and r[4] == PacketType.HANDLE]
        for number, handle in enumerate(handles):
            channel.send(read_request(8 + number, handle, 0, 60_000))
        leaked = 0
        for _ in handles:
            reply = await channel.packet()
            leaked += len(reply) - 13 if reply and reply[4] == PacketType.DATA else 0
        if handles:  # the gateway let them through: end the test's channel ourselves
            channel.chan.close()  # type: ignore[union-attr]
        status = await channel.wait_closed()
    assert leaked == 0
    assert status == 255
    assert b"request id 7 reused while outstanding" in channel.stderr
    refused = file_events(gw, user, action="file.refused")
    assert [details(r)["operation"] for r in refused] == ["protocol"]
    assert "request id 7 reused" in refused[0].reason
    assert audited_bytes(gw, user) == 0  # and nothing crossed
    session_ends_after_file_events(gw, user)


async def test_a_handle_the_target_never_issued_ends_the_session(gw: Gateway) -> None:
    """OPEN and a WRITE to the handle sftp-server will give it, in one channel message.

    The gateway used to forward a request on a handle it did not know: those
    bytes escaped the audit and the cap.
    """
    user = gw.make_user(groups=("by-capped",))
    remote = remote_dir()
    async with raw_connection(gw, user) as conn:
        channel = await _sftp_channel(conn)
        flags = OpenFlags.WRITE | OpenFlags.CREAT | OpenFlags.APPEND
        # OpenSSH's sftp-server numbers its handles from 0: the first is a 4-byte 0.
        # Small enough to reach the gateway in one piece, before the target's reply.
        channel.send(
            open_request(1, f"{remote}/grown.bin", flags)
            + write_request(2, b"\x00\x00\x00\x00", 0, os.urandom(10_000))
        )
        replies = [await channel.packet() for _ in range(2)]
        if None not in replies:  # both answered: the write went through
            channel.chan.close()  # type: ignore[union-attr]
        status = await channel.wait_closed()
    assert status == 255
    assert b"request id 2 names a handle the target has not issued" in channel.stderr
    grown = remote / "grown.bin"
    assert not grown.exists() or grown.stat().st_size == 0
    [refused] = file_events(gw, user, action="file.refused")
    assert "names a handle the target has not issued" in refused.reason
    assert audited_bytes(gw, user) == 0  # and nothing crossed
    session_ends_after_file_events(gw, user)


# -- caps in every open mode -------------------------------------------------------------


async def test_caps_count_bytes_per_handle_and_per_session_in_append_mode(
    gw: Gateway,
) -> None:
    """asyncssh's SFTP client appending 100,000 bytes at a time under a 100,000-byte cap."""
    user = gw.make_user(groups=("by-capped",))
    remote = remote_dir()
    target = f"{remote}/appended.bin"
    chunk = os.urandom(CAP)
    refusals = 0
    async with raw_connection(gw, user) as conn, conn.start_sftp_client() as client:
        async with client.open(target, "ab") as handle:
            await handle.write(chunk, 0)
            for _ in range(2):  # the same handle again: over its cap
                try:
                    await handle.write(chunk, 0)
                except asyncssh.SFTPPermissionDenied:
                    refusals += 1
        async with client.open(target, "ab") as handle:  # a new handle, same file
            try:
                await handle.write(chunk[:10], 0)
            except asyncssh.SFTPPermissionDenied:
                refusals += 1
    assert refusals == 3
    assert (remote / "appended.bin").stat().st_size == CAP
    file_events(gw, user, want=2, action="file.closed")
    assert audited_bytes(gw, user, "upload") == CAP  # every byte that crossed, no more
    assert len(file_events(gw, user, want=2, action="file.refused")) == 2  # once a handle
    session_ends_after_file_events(gw, user)


# -- complete downloads get their sha256, whatever the client -----------------------------


async def test_complete_downloads_by_asyncssh_get_their_sha256(gw: Gateway, tmp_path: Path) -> None:
    user = gw.make_user(groups=("by-allow",))
    remote = remote_dir()
    digest = random_file(remote / "report.bin", 300_000)
    async with raw_connection(gw, user) as conn, conn.start_sftp_client() as client:
        await client.get(f"{remote}/report.bin", str(tmp_path / "report.bin"))
    assert sha256_of(tmp_path / "report.bin") == digest
    [closed] = file_events(gw, user, action="file.closed")
    facts = details(closed)
    assert (facts["bytes"], facts["sha256"], facts["complete"]) == (300_000, digest, True)
    assert audited_bytes(gw, user) == 300_000
    session_ends_after_file_events(gw, user)


def test_complete_downloads_by_pscp_get_their_sha256(gw: Gateway, tmp_path: Path) -> None:
    user = gw.make_user(groups=("by-allow",))
    remote = remote_dir()
    digest = random_file(remote / "report.bin", 300_000)
    host_key = gw.known_hosts.read_text().split("\n")[0].split()[1:3]
    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", "-"], input=" ".join(host_key).encode(),
        capture_output=True, check=True,
    ).stdout.split()[1].decode()  # fmt: skip
    child = pexpect.spawn(
        "pscp", ["-sftp", "-P", str(gw.port), "-l", f"{user.name}:web01", "-hostkey",
                 fingerprint, f"127.0.0.1:{remote}/report.bin",
                 str(tmp_path / "report.bin")],
        timeout=30,
    )  # fmt: skip
    child.expect("Password:")
    child.sendline(user.password or "")
    child.expect("Verification code:")
    child.sendline(next_code(user))
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert sha256_of(tmp_path / "report.bin") == digest
    [closed] = file_events(gw, user, action="file.closed")
    facts = details(closed)
    assert (facts["bytes"], facts["sha256"], facts["complete"]) == (300_000, digest, True)
    session_ends_after_file_events(gw, user)


# -- transfer servers started by exec ----------------------------------------------------


def test_sftp_server_started_by_path_is_held_to_the_rule(gw: Gateway, tmp_path: Path) -> None:
    """``sftp -s /path/to/sftp-server`` makes an exec, not a subsystem request."""
    remote = remote_dir()
    digest = random_file(remote / "notes.bin", 20_000)
    random_file(tmp_path / "evil.bin", 5_000)
    down = gw.make_user(groups=("by-down",))
    result = sftp(gw, down, f"get {remote}/notes.bin {tmp_path}/notes.bin\n"
                  f"put {tmp_path}/evil.bin {remote}/evil.bin\n", tmp_path,
                  "-s", SFTP_SERVER)  # fmt: skip
    assert result.returncode != 0
    assert b"rule by-down allows file transfer download-only" in result.stderr
    assert not (remote / "evil.bin").exists()
    assert sha256_of(tmp_path / "notes.bin") == digest
    [closed] = file_events(gw, down, action="file.closed")
    assert details(closed)["sha256"] == digest and details(closed)["tool"] == "sftp"
    assert audited_bytes(gw, down) == 20_000
    denied = gw.make_user(groups=("by-deny",))
    result = sftp(gw, denied, f"put {tmp_path}/evil.bin {remote}/evil.bin\n", tmp_path,
                  "-s", SFTP_SERVER)  # fmt: skip
    assert result.returncode != 0
    assert b"rule by-deny allows file transfer deny" in result.stderr
    assert not (remote / "evil.bin").exists()
    [refused] = file_events(gw, denied, action="file.refused")
    assert details(refused)["command"] == SFTP_SERVER


def test_rsync_behind_a_wrapped_rsync_path_is_held_to_the_rule(gw: Gateway, tmp_path: Path) -> None:
    remote = remote_dir()
    random_file(tmp_path / "push.bin", 90_000)
    digest = random_file(remote / "pull.bin", 40_000)
    for group in ("by-down", "by-deny"):
        user = gw.make_user(groups=(group,))
        pushed = rsync(gw, user, "--rsync-path=exec rsync", str(tmp_path / "push.bin"),
                       f"127.0.0.1:{remote}/")  # fmt: skip
        assert pushed.returncode != 0
        assert f"rsync upload refused: rule {group}".encode() in pushed.stderr
        assert not (remote / "push.bin").exists()
        [refused] = file_events(gw, user, action="file.refused")
        assert details(refused)["command"].startswith("exec rsync --server")  # type: ignore[union-attr]
    user = gw.make_user(groups=("by-down",))
    pulled = rsync(gw, user, "--rsync-path=exec rsync", f"127.0.0.1:{remote}/pull.bin",
                   str(tmp_path / "pull.bin"))  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    assert sha256_of(tmp_path / "pull.bin") == digest
    [closed] = file_events(gw, user, action="file.closed")
    assert details(closed)["tool"] == "rsync" and details(closed)["direction"] == "download"
    assert details(closed)["bytes"] >= 40_000  # type: ignore[operator]
    # rsync -s sends its paths over the channel: read there, and held to the rule.
    secluded = rsync(gw, user, "-s", f"127.0.0.1:{remote}/pull.bin", str(tmp_path / "s.bin"))
    assert secluded.returncode == 0, secluded.stderr
    assert sha256_of(tmp_path / "s.bin") == digest
    closed = file_events(gw, user, want=2, action="file.closed")[1]
    assert details(closed)["path"] == f"{remote}/pull.bin"


def test_compressed_rsync_is_refused_under_a_cap(gw: Gateway, tmp_path: Path) -> None:
    """rsync -z: the stream is five times smaller than the file it carries."""
    remote = remote_dir()
    (remote / "text.log").write_bytes(b"GET /index.html 200\n" * 250_000)  # 5,000,000 bytes
    user = gw.make_user(groups=("by-down-capped",))
    pulled = rsync(gw, user, "-z", f"127.0.0.1:{remote}/text.log", str(tmp_path / "text.log"))
    assert pulled.returncode != 0
    assert b"rsync compression (-z) refused" in pulled.stderr
    assert not (tmp_path / "text.log").exists()
    [refused] = file_events(gw, user, action="file.refused")
    assert "-z" in refused.reason and str(CAP) in refused.reason


ANSIBLE_PUT = "dd of={path} bs=65536"  # Ansible's ssh plugin, transfer_method "piped"


def test_ansibles_dd_fallback_is_an_upload(gw: Gateway, tmp_path: Path) -> None:
    remote = remote_dir()
    payload = os.urandom(30_000)
    down = gw.make_user(groups=("by-down",))
    refused = ssh_exec(gw, down, ANSIBLE_PUT.format(path=f"{remote}/module.py"), payload)
    assert refused.returncode != 0
    assert b"dd upload refused: rule by-down allows file transfer download-only" in (refused.stderr)
    assert not (remote / "module.py").exists()
    listed = gw.cli("audit", "files", "--user", down.name, "--json")
    assert '"action": "file.refused"' in listed.stdout and '"tool": "dd"' in listed.stdout
    up = gw.make_user(groups=("by-up",))
    written = ssh_exec(gw, up, ANSIBLE_PUT.format(path=f"{remote}/module.py"), payload)
    assert written.returncode == 0, written.stderr
    assert (remote / "module.py").read_bytes() == payload
    [closed] = file_events(gw, up, action="file.closed")
    facts = details(closed)
    assert facts["path"] == f"{remote}/module.py" and facts["direction"] == "upload"
    assert (facts["bytes"], facts["sha256"]) == (30_000, hashlib.sha256(payload).hexdigest())
    assert facts["complete"] is True and audited_bytes(gw, up) == 30_000
    session_ends_after_file_events(gw, up)


async def test_interrupted_transfers_are_recorded_before_the_session_end(
    gw: Gateway,
) -> None:
    """Several files open when the client vanishes: each file.closed precedes session.end."""
    user = gw.make_user(groups=("by-allow",))
    remote = remote_dir()
    for index in range(8):
        random_file(remote / f"f{index}.bin", 1000)

    async with raw_connection(gw, user) as conn:
        channel = await _sftp_channel(conn)
        channel.send(b"".join(
            open_request(index + 1, f"{remote}/f{index}.bin", OpenFlags.READ)
            for index in range(8)
        ))  # fmt: skip
        handles = []
        for _ in range(8):
            reply = await channel.packet()
            assert reply is not None and reply[4] == PacketType.HANDLE
            handles.append(reply[13:])
        channel.send(read_request(20, handles[0], 0, 10))
        await channel.packet()
        conn.abort()
    closed = file_events(gw, user, want=8, action="file.closed")
    assert [r.outcome for r in closed] == ["interrupted"] * 8
    assert audited_bytes(gw, user) == 10  # the one read that was answered
    ends = file_events(gw, user, action="session.end")
    assert ends
    session_ends_after_file_events(gw, user)
