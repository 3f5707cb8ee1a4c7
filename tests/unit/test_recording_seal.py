"""A sealed recording's digest is that of its stored bytes, without reading them back."""

from __future__ import annotations

from pathlib import Path

import pytest

from recordings.asciicast import RecordingWriter, file_sha256, iter_events


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_the_digest_is_of_the_stored_file(tmp_path: Path, compression: str) -> None:
    writer = RecordingWriter(
        tmp_path / "s.cast", width=80, height=24, term="xterm", metadata={"session": "s"}
    )
    for number in range(2000):
        writer.output(f"line {number} é 漢\r\n".encode())
        if number % 500 == 0:
            writer.input(b"ls\r")
            writer.flush()  # several blocks, as the flusher writes them
    writer.resize(100, 30)
    sealed = writer.seal(compression)
    assert sealed.sha256 == file_sha256(sealed.path)
    assert sealed.size == sealed.path.stat().st_size
    events = list(iter_events(sealed.path))
    assert sum(1 for e in events if e.code == "o") == 2000 and events[-1].data == "100x30"


def test_the_flusher_thread_writes_in_order_and_reports_the_backlog_drained(
    tmp_path: Path,
) -> None:
    import threading
    import time

    from recordings import asciicast
    from recordings.asciicast import Flusher

    writer = RecordingWriter(tmp_path / "f.cast", width=80, height=24, term=None, metadata={})
    drained = threading.Event()
    writer.on_drained = drained.set
    flusher = Flusher(interval=60)  # only asked-for flushes: the timer never fires here
    flusher.add(writer)
    chunk = b"x" * 65536
    sent = 0
    # Past BACKLOG_HIGH while the file is busy (as a stalled disk would keep it): the
    # relay is told to pause, and told to go on once the flusher thread caught up.
    with writer._io_lock:
        while sent <= asciicast.BACKLOG_HIGH:
            writer.output(chunk)
            sent += len(chunk)
        assert writer.backlogged and not drained.is_set()
    assert drained.wait(10), "the flusher thread never drained the backlog"
    assert not writer.backlogged
    # Events written while a close races the flusher come out in the order they were made.
    for number in range(3000):
        writer.output(f"{number}\n".encode())
        if number == 1500:
            time.sleep(0.01)
    flusher.remove(writer)
    sealed = writer.seal()
    flusher.stop()
    numbers = [int(e.data) for e in iter_events(sealed.path) if e.data.strip().isdigit()]
    assert numbers == list(range(3000))
    assert sealed.sha256 == file_sha256(sealed.path)
