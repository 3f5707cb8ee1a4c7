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
