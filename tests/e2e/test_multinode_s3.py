"""Three gateway nodes on one PostgreSQL database and one S3 bucket, no shared recordings folder.

Each node has its own recordings folder (its spool and cache); the bucket is a
moto server on loopback. A session recorded on one node is replayed and
verified on another; a node killed with SIGKILL mid-upload has its live
session sealed as interrupted, from the bucket, by the node that takes over.
"""

from __future__ import annotations

import hashlib
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.domain.audit.trail import Trail
from tests.support.database import fresh_database, postgres_server_url
from tests.support.gateway import Gateway, launch_gateway
from tests.support.nodes import add_node as add_cluster_node
from tests.support.s3 import S3Server, s3_server

pytestmark = [pytest.mark.openssh, pytest.mark.postgres]

HEARTBEAT_TIMEOUT = 3.0
NODE_CONFIG = f"""
[node]
name = "node-a"
heartbeat_interval_seconds = 0.5
heartbeat_timeout_seconds = {HEARTBEAT_TIMEOUT}
"""


def recordings_folder(root: Path, name: str) -> Path:
    return root / f"{name}-recordings"


def add_node(first: Gateway, name: str) -> Gateway:
    """Another node of the cluster, with a recordings folder (its spool and cache) of its own."""
    own_folder = {
        f'directory = "{recordings_folder(first.root, "node-a")}"':
            f'directory = "{recordings_folder(first.root, name)}"'
    }  # fmt: skip
    return add_cluster_node(first, name, first_name="node-a", replace=own_folder)


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="module")
def nodes(
    tmp_path_factory: pytest.TempPathFactory, bucket: S3Server
) -> Iterator[tuple[Gateway, Gateway, Gateway]]:
    root = tmp_path_factory.mktemp("cluster")
    recordings = bucket.config(
        interval=0.5, extra=f'directory = "{recordings_folder(root, "node-a")}"\n'
    )
    with (
        fresh_database(postgres_server_url()) as url,
        launch_gateway(root, NODE_CONFIG + recordings, url) as node_a,
    ):
        node_b, node_c = add_node(node_a, "node-b"), add_node(node_a, "node-c")
        try:
            yield node_a, node_b, node_c
        finally:
            for node in (node_b, node_c):
                if node.process.poll() is None:
                    node.process.send_signal(signal.SIGTERM)
                    node.process.wait(timeout=10)


def session_of(node: Gateway, user: str, timeout: float = 15) -> str:
    """The id of ``user``'s (first) session, once it has started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in node.audit.events(Trail.HUMAN):
            if record.action == "session.start" and record.actor == user:
                assert record.session_id is not None
                return record.session_id
        time.sleep(0.1)
    raise AssertionError(f"no session.start for {user}")


def test_each_node_records_to_the_bucket_and_any_node_replays_and_verifies(
    nodes: tuple[Gateway, Gateway, Gateway], bucket: S3Server
) -> None:
    sessions = {}
    for node in nodes:
        name = node.config_path.stem if node.config_path.stem != "pamgate" else "node-a"
        user = node.make_user()
        done = node.run_ssh(user, "web01", f"echo recorded-on-{name}")
        assert done.returncode == 0, done.stderr
        sessions[name] = session_of(node, user.name)
    node_a, node_b, node_c = nodes
    for name, session in sessions.items():
        [object_name] = [n for n in bucket.names() if n.endswith(f"/{session}.cast")]
        assert f"recorded-on-{name}".encode() in bucket.read(object_name)
    # node-b replays what node-c recorded: from the bucket, through its own cache.
    replayed = node_b.cli("replay", sessions["node-c"])
    assert replayed.returncode == 0 and "recorded-on-node-c" in replayed.stdout, replayed
    cache = recordings_folder(node_a.root, "node-b") / "cache"
    assert [p.name for p in cache.rglob(f"{sessions['node-c']}.cast")] == [
        f"{sessions['node-c']}.cast"
    ]
    # No node's spool holds a sealed recording: the bucket is the only shared place.
    for name in ("node-a", "node-b", "node-c"):
        spool = recordings_folder(node_a.root, name) / "spool"
        assert not [p for p in spool.rglob("*") if p.is_file()], name
    verified = node_a.cli("recordings", "verify", "--all")
    assert verified.returncode == 0, verified.stdout
    assert "3 of 3 recordings verified" in verified.stdout


def test_a_node_killed_mid_upload_is_sealed_by_the_survivor_from_the_bucket(
    nodes: tuple[Gateway, Gateway, Gateway], bucket: S3Server
) -> None:
    node_a, node_b, node_c = nodes
    user = node_c.make_user()
    process = node_c.start_ssh(user, "web01", "echo before-node-c-died; sleep 60")
    try:
        session = session_of(node_c, user.name)
        deadline = time.monotonic() + 20
        while not any(
            b"before-node-c-died" in bucket.read(n)
            for n in bucket.names()
            if f"{session}.cast.parts/" in n
        ):
            assert time.monotonic() < deadline, bucket.names()
            time.sleep(0.2)
        node_c.process.send_signal(signal.SIGKILL)
        node_c.process.wait(timeout=10)
        killed_at = time.monotonic()
        deadline = killed_at + HEARTBEAT_TIMEOUT + 20
        sealed = []
        while not sealed:
            assert time.monotonic() < deadline, "the interrupted recording was never sealed"
            time.sleep(0.2)
            sealed = [e for e in node_a.audit.events(Trail.HUMAN)
                      if e.action == "recording.sealed" and e.session_id == session]  # fmt: skip
        print(f"node-c's recording was sealed {time.monotonic() - killed_at:.1f} s after SIGKILL")
    finally:
        process.kill()
        process.wait(timeout=10)
    assert sealed[0].actor in ("gateway:node-a", "gateway:node-b")
    [object_name] = [n for n in bucket.names() if n.endswith(f"/{session}.cast")]
    final = bucket.read(object_name)
    assert b"before-node-c-died" in final
    assert json.loads(sealed[0].details)["sha256"] == hashlib.sha256(final).hexdigest()
    assert not [n for n in bucket.names() if f"{session}.cast.parts/" in n]
    for node in (node_a, node_b):
        verified = node.cli("recordings", "verify", "--all")
        assert verified.returncode == 0, verified.stdout
        assert f"{session}: OK" in verified.stdout
        assert "interrupted: sealed as found after the crash" in verified.stdout
