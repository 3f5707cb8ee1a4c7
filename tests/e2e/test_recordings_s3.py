"""Recordings in an S3-compatible bucket, end to end: a real ``pamgate serve``, stock ssh and
sshd, and moto's S3 server on loopback; no folder shared between nodes.

A "second node" here is a second config on the same database whose recordings folder
(its spool and cache) is its own: whatever it reads, it read from the bucket.
"""

from __future__ import annotations

import hashlib
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from gateway.domain.audit.trail import Trail
from tests.support.gateway import (
    Gateway,
    launch_gateway,
    run_cli,
    session_end,
    set_prompt,
    spawn_shell,
)
from tests.support.s3 import BUCKET, PREFIX, S3Server, s3_server

pytestmark = pytest.mark.openssh


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, bucket: S3Server) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("gateway")
    with launch_gateway(root, bucket.config()) as running:
        yield running


def other_node(gateway: Gateway, name: str) -> Path:
    """A config for another node on the same database, with a recordings folder of its own."""
    text = gateway.config_path.read_text()
    folder = gateway.root / f"{name}-recordings"
    text = text.replace("[recordings]\n", f'[recordings]\ndirectory = "{folder}"\n', 1)
    path = gateway.root / f"{name}.toml"
    path.write_text(text)
    return path


#: A line of output as a recording's JSON holds it (CR LF escaped); typed keys end in CR only.
OUTPUT_LINE = b"%s\\r\\n"


def wait_for_object(bucket: S3Server, text: bytes, timeout: float = 20) -> list[str]:
    """The chunk objects, once one of them holds ``text``."""
    deadline = time.monotonic() + timeout
    while True:
        chunks = [n for n in bucket.names() if ".parts/" in n]
        if any(text in bucket.read(n) for n in chunks):
            return chunks
        assert time.monotonic() < deadline, f"no chunk holds {text!r}: {bucket.names()}"
        time.sleep(0.2)


def test_a_session_goes_to_the_bucket_and_another_node_replays_and_verifies_it(
    gateway: Gateway, bucket: S3Server, tmp_path: Path
) -> None:
    user = gateway.make_user()
    done = gateway.run_ssh(user, "web01", "echo stored-in-s3; echo second-line")
    assert done.returncode == 0, done.stderr
    end = session_end(gateway, user.name, timeout=15)
    session = str(end["session"])
    [name] = [n for n in bucket.names() if session in n]
    assert name.startswith(f"{PREFIX}/") and name.endswith(f"/{session}.cast")
    stored = bucket.read(name)
    assert b"stored-in-s3" in stored
    # Sealed with the digest the audit trail holds; the chunks are gone.
    assert hashlib.sha256(stored).hexdigest() == end["recording_sha256"]
    head = bucket.client.head_object(Bucket=BUCKET, Key=name)
    assert head["Metadata"]["sha256"] == end["recording_sha256"]
    # The recording node keeps no spooled file, only its cached copy.
    spool = gateway.data_dir / "recordings" / "spool"
    assert not [p for p in spool.rglob("*") if p.is_file()]
    node_b = other_node(gateway, "node-b")
    verified = run_cli("--config", str(node_b), "recordings", "verify", session)
    assert verified.returncode == 0 and "OK" in verified.stdout, verified
    replayed = run_cli("--config", str(node_b), "replay", session)
    assert replayed.returncode == 0 and "stored-in-s3" in replayed.stdout, replayed
    sought = run_cli("--config", str(node_b), "replay", session, "--from", "0.0")
    assert sought.returncode == 0 and "second-line" in sought.stdout
    exported = tmp_path / "copy.cast"
    copied = run_cli("--config", str(node_b), "recordings", "export", session, "-o", str(exported))
    assert copied.returncode == 0, copied.stderr
    assert exported.read_bytes() == stored
    found = run_cli("--config", str(node_b), "recordings", "search", "stored-in")
    assert session[:12] in found.stdout
    cached = list((gateway.root / "node-b-recordings" / "cache").rglob(f"{session}.cast"))
    assert len(cached) == 1 and cached[0].read_bytes() == stored
    everything = run_cli("--config", str(node_b), "recordings", "verify", "--all")
    assert everything.returncode == 0, everything.stdout


def test_status_reports_the_bucket_reachable(gateway: Gateway) -> None:
    status = gateway.cli("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"recordings: bucket {BUCKET}, prefix {PREFIX}/ (reachable)" in status.stdout
    # A bucket that does not exist (a typo in the config) is no place for recordings.
    typo = gateway.root / "typo.toml"
    typo.write_text(gateway.config_path.read_text().replace(f"s3://{BUCKET}/", "s3://no-such/"))
    status = run_cli("--config", str(typo), "status")
    assert status.returncode == 1, status.stdout
    assert "recordings: s3://no-such/" in status.stdout
    assert "  unreachable: " in status.stdout and "NoSuchBucket" in status.stdout


def test_chunks_reach_the_bucket_while_the_session_runs(gateway: Gateway, bucket: S3Server) -> None:
    user = gateway.make_user()
    process = gateway.start_ssh(user, "web01", "echo live-chunk-marker; sleep 30")
    try:
        chunks = wait_for_object(bucket, b"live-chunk-marker")
        session = chunks[0].rsplit("/", 2)[-2].removesuffix(".cast.parts")
        assert all(c.startswith(f"{PREFIX}/") and f"{session}.cast.parts/" in c for c in chunks)
        # The first chunk is the header, uploaded before the session started.
        assert json.loads(bucket.read(chunks[0]).splitlines()[0])["version"] == 2
        # Another node sees the live session's recording so far.
        node_c = other_node(gateway, "node-c")
        listing = run_cli("--config", str(node_c), "recordings", "list")
        assert session[:12] in listing.stdout
    finally:
        process.kill()
        process.wait(timeout=10)
    end = session_end(gateway, user.name, timeout=15)
    assert end["session"] == session
    assert not [n for n in bucket.names() if ".parts/" in n and session in n]


def test_a_replaced_object_fails_verification_on_every_node(
    gateway: Gateway, bucket: S3Server
) -> None:
    user = gateway.make_user()
    assert gateway.run_ssh(user, "web01", "echo original-text").returncode == 0
    session = str(session_end(gateway, user.name, timeout=15)["session"])
    [name] = [n for n in bucket.names() if session in n]
    node_d = other_node(gateway, "node-d")
    assert run_cli("--config", str(node_d), "recordings", "verify", session).returncode == 0
    forged = bucket.read(name).replace(b"original-text", b"forged---text")
    bucket.client.put_object(Bucket=BUCKET, Key=name, Body=forged)
    # Both the recording node and node-d hold a cached copy: the new ETag is fetched.
    for config in (gateway.config_path, node_d):
        verified = run_cli("--config", str(config), "recordings", "verify", session)
        assert verified.returncode == 1 and "FAILED: sha256 is" in verified.stdout, verified
        refused = run_cli("--config", str(config), "replay", session)
        assert refused.returncode == 1 and "fails verification" in refused.stderr
        assert "forged" not in refused.stdout
    failures = [r for r in gateway.audit.events(Trail.HUMAN)
                if r.session_id == session and r.outcome == "failure"]  # fmt: skip
    assert {r.action for r in failures} == {"recording.verify", "recording.replayed"}
    # Put back as it was, it verifies again (the suite's later `verify --all` needs it).
    bucket.client.put_object(
        Bucket=BUCKET, Key=name, Body=forged.replace(b"forged---text", b"original-text")
    )
    assert run_cli("--config", str(node_d), "recordings", "verify", session).returncode == 0


def test_an_unreachable_store_refuses_the_session(tmp_path: Path) -> None:
    with s3_server(tmp_path / "s3") as gone:
        config = gone.config()
    # The server is stopped: nothing listens on its port any more.
    with launch_gateway(tmp_path / "gw", config) as own:
        user = own.make_user()
        refused = own.run_ssh(user, "web01", "echo must-not-run")
        assert refused.returncode == 255
        assert b"cannot be recorded" in refused.stderr and b"so it is refused" in refused.stderr
        assert b"must-not-run" not in refused.stdout
        [event] = [r for r in own.audit.events(Trail.HUMAN)
                   if r.action == "access.refused" and r.actor == user.name]  # fmt: skip
        assert "recording store failed" in event.reason and f"s3://{BUCKET}/" in event.reason
        assert not [p for p in (own.data_dir / "recordings").rglob("*") if p.is_file()]
        # The operator's health check says so too: unhealthy, and why.
        status = own.cli("status")
        assert status.returncode == 1, status.stdout
        assert f"recordings: s3://{BUCKET}/" in status.stdout and "  unreachable: " in status.stdout
        assert "unhealthy: recordings cannot be stored here" in status.stdout


def test_a_store_that_goes_away_ends_the_live_session(tmp_path: Path) -> None:
    with (
        s3_server(tmp_path / "s3") as store,
        launch_gateway(tmp_path / "gw", store.config(interval=0.5)) as own,
    ):
        user = own.make_user()
        child = spawn_shell(own, user, "web01")
        try:
            set_prompt(child)
            child.sendline("echo before-the-outage")
            child.expect("PG> ")
            wait_for_object(store, b"before-the-outage")
            store.stop()
            child.sendline("echo during-the-outage")
            child.expect("no longer be recorded", timeout=30)
            child.expect(pexpect.EOF, timeout=20)
        finally:
            child.close()
        end = session_end(own, user.name, timeout=15)
        assert end["status"] == "interrupted"
        assert "cannot upload to the bucket" in str(end.get("recording_incomplete"))


def test_kill_9_mid_upload_is_sealed_as_interrupted_from_the_bucket(tmp_path: Path) -> None:
    with (
        s3_server(tmp_path / "s3") as store,
        launch_gateway(tmp_path / "gw", store.config(interval=0.5)) as own,
    ):
        user = own.make_user()
        child = spawn_shell(own, user, "web01")
        try:
            set_prompt(child)
            child.sendline("echo before-the-crash")
            child.expect("PG> ")
            # The command's output, not only its keystrokes (an input event, which a chunk
            # can hold alone): the replay below shows output.
            wait_for_object(store, OUTPUT_LINE % b"before-the-crash")
            own.process.send_signal(signal.SIGKILL)
            own.process.wait(timeout=10)
            child.expect(pexpect.EOF, timeout=20)
        finally:
            child.close()
        # The node comes back on another machine: its spool is gone with the old one.
        replacement = other_node(own, "replacement")
        own.config_path = replacement
        own.restart()
        deadline = time.monotonic() + 20
        while "interrupted" not in own.cli("recordings", "list").stdout:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        verified = own.cli("recordings", "verify", "--all")
        while "never sealed" in verified.stdout:
            assert time.monotonic() < deadline, verified.stdout
            time.sleep(0.2)
            verified = own.cli("recordings", "verify", "--all")
        assert verified.returncode == 0, verified.stdout
        assert "interrupted: sealed as found after the crash" in verified.stdout
        sealed = [e for e in own.audit.events(Trail.HUMAN) if e.action == "recording.sealed"]
        assert len(sealed) == 1
        details = json.loads(sealed[0].details)
        [name] = [n for n in store.names() if n.endswith(".cast")]
        final = store.read(name)
        assert details["sha256"] == hashlib.sha256(final).hexdigest()
        assert b"before-the-crash" in final
        assert not [n for n in store.names() if ".parts/" in n]
        replayed = own.cli("replay", str(sealed[0].session_id))
        assert replayed.returncode == 0 and "before-the-crash" in replayed.stdout


def test_sealed_recordings_go_up_compressed_and_retained_under_object_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with s3_server(tmp_path / "s3", object_lock=True) as store:
        # Endpoint and credentials from the standard AWS variables, not the config.
        for variable, value in store.environment().items():
            monkeypatch.setenv(variable, value)
        locked = 's3_object_lock = "governance"\ns3_object_lock_days = 2\ncompression = "zstd"\n'
        with launch_gateway(tmp_path / "gw", store.config(from_env=True, extra=locked)) as own:
            user = own.make_user()
            assert own.run_ssh(user, "web01", "echo kept-for-two-days").returncode == 0
            end = session_end(own, user.name, timeout=15)
            session = str(end["session"])
            # Compressed before the upload: the one object is the sealed .cast.zst (no chunks).
            [name] = [n for n in store.names() if session in n]
            assert name.endswith(f"/{session}.cast.zst")
            assert hashlib.sha256(store.read(name)).hexdigest() == end["recording_sha256"]
            replayed = own.cli("replay", session)
            assert replayed.returncode == 0 and "kept-for-two-days" in replayed.stdout
        # HEAD, not GetObjectRetention: moto 5.2 answers that one with a 500.
        head = store.client.head_object(Bucket=BUCKET, Key=name)
        assert head["ObjectLockMode"] == "GOVERNANCE"
        days = (head["ObjectLockRetainUntilDate"].timestamp() - time.time()) / 86400
        assert 1.9 < days <= 2.0
        versions = store.client.list_object_versions(Bucket=BUCKET, Prefix=name)["Versions"]
        [version] = [v for v in versions if v["Key"] == name]
        with pytest.raises(store.client.exceptions.ClientError, match="AccessDenied"):
            store.client.delete_object(Bucket=BUCKET, Key=name, VersionId=version["VersionId"])


def test_object_lock_asked_of_a_bucket_without_it_is_skipped_and_said(tmp_path: Path) -> None:
    with s3_server(tmp_path / "s3") as store:
        locked = 's3_object_lock = "compliance"\n'
        with launch_gateway(tmp_path / "gw", store.config(extra=locked)) as own:
            user = own.make_user()
            assert own.run_ssh(user, "web01", "echo stored-anyway").returncode == 0
            session = str(session_end(own, user.name, timeout=15)["session"])
            log = own.log_text()
        [name] = [n for n in store.names() if n.endswith(f"/{session}.cast")]
        assert b"stored-anyway" in store.read(name)
        assert f"bucket {BUCKET} has no object lock" in log
        assert "recordings are stored without retention" in log
