"""The S3 recording store on its own, against moto's S3 server: chunks, recovery, failure."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.config import RecordingSettings
from gateway.domain.recordings import storage
from gateway.domain.recordings.storage import ObjectStore, open_recording_store
from recordings.asciicast import RecordingWriter
from tests.support.s3 import ACCESS_KEY, BUCKET, PREFIX, SECRET_KEY, S3Server, s3_server

SESSION = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[S3Server]:
    with s3_server(tmp_path / "s3") as running:
        yield running


def node_store(server: S3Server, root: Path) -> ObjectStore:
    settings = RecordingSettings(
        url=f"s3://{BUCKET}/{PREFIX}", s3_endpoint_url=server.endpoint,
        s3_access_key_id=ACCESS_KEY, s3_secret_access_key=SECRET_KEY,
        s3_upload_interval_seconds=0.2, s3_timeout_seconds=1,
    )  # fmt: skip
    store = open_recording_store(settings, root)
    assert isinstance(store, ObjectStore)
    return store


def chunks(server: S3Server) -> list[str]:
    return [name for name in server.names() if ".cast.parts/" in name]


def wait_until_uploaded(server: S3Server, size: int, timeout: float = 20) -> bytes:
    """The chunks put together, once they hold ``size`` bytes."""
    deadline = time.monotonic() + timeout
    while True:
        joined = b"".join(server.read(name) for name in chunks(server))
        if len(joined) >= size:
            return joined
        assert time.monotonic() < deadline, f"{len(joined)} of {size} bytes uploaded"
        time.sleep(0.1)


def test_complete_lines_go_up_in_chunks_and_another_node_recovers_them(
    server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "MAX_CHUNK_BYTES", 4096)
    node_a = node_store(server, tmp_path / "node-a")
    path = node_a.new_path(SESSION, datetime(2026, 12, 7, tzinfo=UTC))
    writer = RecordingWriter(path, width=80, height=24, term="xterm", metadata={})
    node_a.opened(writer)
    # The header went up before opened() returned.
    [first] = chunks(server)
    assert first == f"{PREFIX}/2026/12/07/{SESSION}.cast.parts/00000000"
    assert server.read(first) == path.read_bytes()
    for line in range(300):
        writer.output(f"line {line:04d} ".encode() * 10 + b"\r\n")
    writer.flush()
    complete = path.read_bytes()
    # A torn line (a write cut short): it stays local until it is complete.
    with path.open("ab") as recording:
        recording.write(b'[9.5, "o", "torn')
    assert wait_until_uploaded(server, len(complete)) == complete
    time.sleep(0.5)  # more rounds: the torn line must still not go up
    assert b"".join(server.read(name) for name in chunks(server)) == complete
    assert len(chunks(server)) > len(complete) // 4096  # split at MAX_CHUNK_BYTES
    node_a.close()
    # node-b never saw the spool: it seals what the bucket holds, as one final object.
    node_b = node_store(server, tmp_path / "node-b")
    recovered = node_b.recover(node_a.key(path))
    assert recovered is not None and recovered.read_bytes() == complete
    assert chunks(server) == []
    assert server.read(f"{PREFIX}/2026/12/07/{SESSION}.cast") == complete
    # Recovering again finds the final object and changes nothing.
    again = node_b.recover(node_a.key(path))
    assert again is not None and again.read_bytes() == complete
    node_b.close()


def test_a_key_from_the_database_cannot_lead_out_of_the_folders(
    server: S3Server, tmp_path: Path
) -> None:
    store = node_store(server, tmp_path / "node")
    (tmp_path / "secret.cast").write_text("not a recording")
    assert store.local_path("../../secret.cast") is None
    assert store.local_path("/etc/passwd") is None
    store.close()


def test_an_upload_that_fails_fails_the_recording_once(server: S3Server, tmp_path: Path) -> None:
    store = node_store(server, tmp_path / "node")
    path = store.new_path(SESSION, datetime.now(UTC))
    writer = RecordingWriter(path, width=80, height=24, term=None, metadata={})
    errors: list[str] = []
    writer.on_error = errors.append
    store.opened(writer)
    server.stop()
    writer.output(b"after the bucket went away\r\n")
    writer.flush()
    deadline = time.monotonic() + 20
    while not errors:
        assert time.monotonic() < deadline, "the failed upload never failed the recording"
        time.sleep(0.1)
    time.sleep(1)  # later rounds: the session is ended once, not again and again
    assert len(errors) == 1 and writer.failed == errors[0]
    assert errors[0].startswith("recording storage failed: cannot upload to the bucket: s3://")
    store.close()


def test_the_node_that_wrote_it_recovers_from_its_spool_losing_nothing(
    server: S3Server, tmp_path: Path
) -> None:
    node = node_store(server, tmp_path / "node")
    path = node.new_path(SESSION, datetime.now(UTC))
    writer = RecordingWriter(path, width=80, height=24, term=None, metadata={})
    node.opened(writer)
    writer.output(b"written before the crash\r\n")
    writer.flush()
    # The crash: nothing more goes up, and the spool holds more than the bucket.
    node.close()
    with path.open("ab") as recording:
        recording.write(b'[1.5, "o", "the last moment"]\n')
    restarted = node_store(server, tmp_path / "node")
    recovered = restarted.recover(restarted.key(path))
    assert recovered is not None and b"the last moment" in recovered.read_bytes()
    final = server.read(f"{PREFIX}/{restarted.key(path)}")
    assert final == recovered.read_bytes() and chunks(server) == []
    assert not path.exists()  # moved to the cache
    restarted.close()
