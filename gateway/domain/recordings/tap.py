"""The tap between a relayed session and its recording.

Pty sessions are recorded whole: output, keystrokes and resizes. Sessions
without a pty (exec, ``ssh -T`` shells, subsystems) keep the first ``cap``
bytes of stdout, of stderr (both as output events) and of stdin (as input
events), while byte counts and sha256 digests cover every byte: an auditor
needs to know what a 10 GB ``pg_dump`` or ``bash -s < script`` was, not to
have it twice.

The digests are computed off the event loop: a stream's bytes are handed,
in batches of DIGEST_BATCH bytes, to one digest thread per process
(:class:`StreamDigest`). ``hashlib`` releases the GIL while it hashes, so
the relay goes on moving bytes on its own core; at 1 GB/s of exec output
the sha256 alone was a tenth of the relay's time.
"""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from recordings.asciicast import RecordingWriter

STREAMS = ("stdout", "stderr", "stdin")
#: Bytes of a stream kept (as the chunks they came in: no copy) before the digest thread
#: gets them: one hand-over per MiB rather than one per packet.
DIGEST_BATCH = 1024 * 1024

_digest_thread: ThreadPoolExecutor | None = None
_digest_thread_lock = threading.Lock()


def _digest_worker() -> ThreadPoolExecutor:
    """The process's digest thread (one: each stream's batches must be hashed in order)."""
    global _digest_thread
    with _digest_thread_lock:
        if _digest_thread is None:
            _digest_thread = ThreadPoolExecutor(1, thread_name_prefix="pamgate-digest")
        return _digest_thread


def _hash_chunks(digest: Any, chunks: list[bytes]) -> None:
    for chunk in chunks:
        digest.update(chunk)


class StreamDigest:
    """The byte count and sha256 of one stream, hashed on the digest thread."""

    def __init__(self) -> None:
        self.count = 0
        self._sha256 = hashlib.sha256()
        self._batch: list[bytes] = []
        self._batched = 0
        self._last: Future[None] | None = None

    def add(self, data: bytes) -> None:
        self.count += len(data)
        self._batch.append(data)
        self._batched += len(data)
        if self._batched >= DIGEST_BATCH:
            self._hand_over()

    def hexdigest(self) -> str:
        """The sha256 of every byte added (blocks until the digest thread has them all)."""
        if self._batch:
            self._hand_over()
        if self._last is not None:
            self._last.result()
        return self._sha256.hexdigest()

    def _hand_over(self) -> None:
        batch, self._batch, self._batched = self._batch, [], 0
        # One worker thread runs the batches in the order given, so only the last
        # needs waiting for.
        self._last = _digest_worker().submit(_hash_chunks, self._sha256, batch)


class SessionTap:
    """Feeds one session's traffic to its recording writer."""

    def __init__(self, writer: RecordingWriter, *, exec_payload_cap: int | None) -> None:
        """``exec_payload_cap`` is None for a pty session (record everything)."""
        self.writer = writer
        self._cap = exec_payload_cap
        self._streams = {name: StreamDigest() for name in STREAMS}

    @property
    def is_exec(self) -> bool:
        return self._cap is not None

    def from_target(self, data: bytes, *, stderr: bool) -> None:
        """Output from the target, on stdout or stderr."""
        if self._cap is None:
            self.writer.output(data)
            return
        kept = self._count("stderr" if stderr else "stdout", data, self._cap)
        if kept:
            self.writer.output(kept)

    def from_client(self, data: bytes) -> None:
        """Keystrokes from the user, or stdin without a pty (capped like output)."""
        if self._cap is None:
            self.writer.input(data)
            return
        kept = self._count("stdin", data, self._cap)
        if kept:
            self.writer.input(kept)

    def _count(self, stream: str, data: bytes, cap: int) -> bytes:
        """Count and digest ``data`` on ``stream``; return the part within the cap."""
        digest = self._streams[stream]
        kept = digest.count
        digest.add(data)
        return data[: max(cap - kept, 0)]

    def resize(self, width: int, height: int) -> None:
        self.writer.resize(width, height)

    def summary(self) -> dict[str, Any]:
        """Stream facts for the session's end event (exec sessions).

        Blocking (it waits for the digest thread): call it off the event loop.
        """
        if self._cap is None:
            return {}
        facts: dict[str, Any] = {"payload_cap_bytes": self._cap}
        for name, stream in self._streams.items():
            facts[f"{name}_bytes"] = stream.count
            facts[f"{name}_sha256"] = stream.hexdigest()
            facts[f"{name}_truncated"] = stream.count > self._cap
        return facts
