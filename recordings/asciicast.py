"""Asciicast v2 recordings: writing as bytes flow, sealing, and reading back.

A recording is a JSON header line followed by one JSON array per event:
``[seconds, "o", text]`` (output), ``"i"`` (input) or ``"r"`` (resize,
``"COLSxROWS"``). The stock ``asciinema play`` and ``asciinema cat`` read
it. pamgate's own metadata (session id, user, target, ...) sits under the
header key ``"pamgate"``, which players ignore.

Writing is split so the relay never waits on the disk: the relay calls
:meth:`RecordingWriter.output` and friends, which only append to an
in-memory list; a :class:`Flusher`, on a thread of its own, encodes and
writes every writer's pending events at least every ``interval`` seconds
(0.25 s by default), so a SIGKILL loses at most about that much. If the disk
falls behind, the writer reports backlog so the relay can pause reading
(recording bytes are never dropped). A write error marks the writer failed
and calls its error callback: the session must end (fail closed).

Sealing flushes and fsyncs, optionally compresses (gzip or zstd), makes the
file read-only and returns its sha256. Readers open ``.cast``,
``.cast.gz`` and ``.cast.zst`` alike.

Imports nothing from ``gateway`` or ``tui``.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import gzip
import hashlib
import io
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson
import zstandard

#: Pending bytes above which a flush is asked for at once, not at the next tick.
FLUSH_SOON = 1024 * 1024
#: Pending bytes above which a writer reports backlog (the relay pauses).
BACKLOG_HIGH = 16 * 1024 * 1024
#: Pending bytes below which a backlogged writer lets the relay resume.
BACKLOG_LOW = 1 * 1024 * 1024
SUFFIXES = (".cast", ".cast.gz", ".cast.zst")
#: Largest terminal width or height a recording may declare; replay draws every cell,
#: so a hostile recording must not declare a screen of a billion columns.
MAX_TERMINAL_SIDE = 1000


class RecordingError(Exception):
    """A recording could not be created, written, sealed or read."""


@dataclass(frozen=True)
class SealedRecording:
    """A finished recording: where it is, its digest and its size on disk."""

    path: Path
    sha256: str
    size: int


@dataclass(frozen=True)
class Event:
    """One recorded event."""

    time: float
    code: str
    data: str


class RecordingWriter:
    """One asciicast v2 file being written while its session runs."""

    def __init__(
        self,
        path: Path,
        *,
        width: int,
        height: int,
        term: str | None,
        metadata: dict[str, Any],
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """Create the file and write its header now (errors surface here, before the session)."""
        self.path = path
        self._clock = clock
        self._started = clock()
        header: dict[str, Any] = {
            "version": 2,
            "width": max(int(width), 1),
            "height": max(int(height), 1),
            "timestamp": int(wall_clock()),
            "env": {"TERM": term or "", "SHELL": ""},
            "pamgate": metadata,
        }
        try:
            make_private_dirs(path.parent)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            self._file = os.fdopen(fd, "wb")
            # The digest of the stored bytes grows as they are written, so sealing does not
            # read the whole recording back (a large session's end was mostly that).
            self._digest = hashlib.sha256()
            first_line = json.dumps(header, ensure_ascii=False).encode() + b"\n"
            self._file.write(first_line)
            self._digest.update(first_line)
            self._file.flush()
        except OSError as exc:
            raise RecordingError(f"cannot create recording {path}: {exc.strerror or exc}") from exc
        self._decoders = {
            "o": codecs.getincrementaldecoder("utf-8")("replace"),
            "i": codecs.getincrementaldecoder("utf-8")("replace"),
        }
        self._lock = threading.Lock()
        # The flusher's thread and close() (in a worker thread) share the file; a flush
        # holds it from taking the pending events to writing them, so batches stay in order.
        self._io_lock = threading.Lock()
        self._pending: list[tuple[float, str, bytes | str]] = []
        self._pending_bytes = 0
        self.failed: str | None = None
        self.closed = False
        self.on_error: Callable[[str], None] | None = None
        self.on_drained: Callable[[], None] | None = None
        #: Called (once per batch) when FLUSH_SOON bytes are pending; set by the Flusher.
        self.on_flush_wanted: Callable[[], None] | None = None
        self._flush_wanted = False
        self._backlogged = False

    # -- called by the relay (cheap, never touches the disk) ----------------

    def output(self, data: bytes) -> None:
        """Record terminal output."""
        self._add("o", data)

    def input(self, data: bytes) -> None:
        """Record keystrokes (or stdin)."""
        self._add("i", data)

    def resize(self, width: int, height: int) -> None:
        """Record a window size change."""
        self._add("r", f"{width}x{height}")

    @property
    def backlogged(self) -> bool:
        """True while more than BACKLOG_HIGH bytes wait for the disk."""
        return self._backlogged

    def _add(self, code: str, data: bytes | str) -> None:
        if self.closed:
            return
        with self._lock:
            self._pending.append((self._clock() - self._started, code, data))
            self._pending_bytes += len(data)
            if self._pending_bytes > BACKLOG_HIGH:
                self._backlogged = True
            wanted = self._pending_bytes > FLUSH_SOON and not self._flush_wanted
            if wanted:
                self._flush_wanted = True
        # Busy sessions are flushed as their output accumulates, so a burst
        # never waits for the timer (and never pauses the relay needlessly).
        if wanted and self.on_flush_wanted is not None:
            self.on_flush_wanted()

    # -- called by the flusher -----------------------------------------

    def flush(self) -> None:
        """Encode and write pending events, then flush to the OS."""
        with self._io_lock:
            with self._lock:
                pending, self._pending = self._pending, []
                self._pending_bytes = 0
                self._flush_wanted = False
            if not pending or self.failed:
                self._maybe_drained()
                return
            lines = []
            for offset, code, data in pending:
                text = self._decoders[code].decode(data) if isinstance(data, bytes) else data
                if text:
                    # orjson: the encoding is most of a recording's CPU cost.
                    lines.append(orjson.dumps([round(offset, 6), code, text]))
            try:
                if lines and not self._file.closed:
                    lines.append(b"")  # the last line's newline, without copying the block
                    block = b"\n".join(lines)
                    self._file.write(block)
                    self._digest.update(block)
                    self._file.flush()
                    # Writes to an unlinked file succeed and vanish with the last
                    # descriptor: a removed recording is a failed one.
                    if os.fstat(self._file.fileno()).st_nlink == 0:
                        raise FileNotFoundError(errno.ENOENT, "the recording file was removed")
            except (OSError, ValueError) as exc:
                self._fail(f"recording storage failed: {getattr(exc, 'strerror', None) or exc}")
                return
            self._maybe_drained()

    def _maybe_drained(self) -> None:
        with self._lock:  # the relay sets the backlog under it, from its own thread
            drained = self._backlogged and self._pending_bytes < BACKLOG_LOW
            if drained:
                self._backlogged = False
        if drained and self.on_drained is not None:
            self.on_drained()

    def fail(self, message: str) -> None:
        """Mark the recording failed from outside (its storage went away): the session ends.

        Calls the error callback once, as a failed write does; later writes are dropped.
        """
        self._fail(message)

    def _fail(self, message: str) -> None:
        if self.failed:
            return
        self.failed = message
        if self.on_error is not None:
            self.on_error(message)

    # -- sealing ------------------------------------------------------------

    def close(self) -> None:
        """Write what is pending and close the file (without sealing)."""
        if self.closed:
            return
        self.flush()
        self.closed = True
        with self._io_lock:
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            except (OSError, ValueError) as exc:
                self._fail(f"recording storage failed: {getattr(exc, 'strerror', None) or exc}")
            finally:
                try:
                    self._file.close()
                except OSError as exc:
                    self._fail(f"recording storage failed: {exc.strerror or exc}")

    def seal(self, compression: str = "none") -> SealedRecording:
        """Close, optionally compress, make read-only; return path and sha256.

        Raises RecordingError if the recording could not be written completely.
        """
        self.close()
        if self.failed:
            raise RecordingError(self.failed)
        return seal_file(self.path, compression, plain_sha256=self._digest.hexdigest())


def seal_file(
    path: Path, compression: str = "none", *, plain_sha256: str | None = None
) -> SealedRecording:
    """Compress (optionally) and make read-only a closed recording; return its digest.

    ``plain_sha256``: the digest of the file as it is, when the writer kept it (the
    file is then not read back); without it, or when compressing, the digest is of the
    bytes stored, computed as they are read or written.
    """
    try:
        if compression == "none":
            final = path
            digest = plain_sha256 or file_sha256(final)
        else:
            final = path.with_name(path.name + (".gz" if compression == "gzip" else ".zst"))
            digest = _compress(path, final, compression)
            path.unlink()
        final.chmod(0o444)
        return SealedRecording(final, digest, final.stat().st_size)
    except OSError as exc:
        raise RecordingError(f"cannot seal recording {path}: {exc.strerror or exc}") from exc


class _HashingFile:
    """A writable file that also digests what goes through it (for the compressors)."""

    def __init__(self, target: io.BufferedWriter) -> None:
        self._target = target
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self._target.write(data)

    def flush(self) -> None:
        self._target.flush()


def _compress(source: Path, target: Path, compression: str) -> str:
    """Write ``source`` compressed to ``target``; return the sha256 of the compressed bytes."""
    temporary = target.with_name(target.name + ".tmp")
    with open(source, "rb") as plain, open(temporary, "wb") as packed:
        hashing = _HashingFile(packed)
        if compression == "gzip":
            with gzip.GzipFile(fileobj=hashing, mode="wb", mtime=0) as stream:
                _copy(plain, stream)
        elif compression == "zstd":
            compressor = zstandard.ZstdCompressor(level=3)
            writer = compressor.stream_writer(hashing, closefd=False)  # type: ignore[arg-type]
            with writer as stream:
                _copy(plain, stream)
        else:
            raise RecordingError(f"unknown compression {compression!r}")
        packed.flush()
        os.fsync(packed.fileno())
    temporary.rename(target)
    return hashing.digest.hexdigest()


def _copy(source: io.BufferedReader, target: Any) -> None:
    while chunk := source.read(1 << 20):
        target.write(chunk)


def file_sha256(path: Path) -> str:
    """sha256 of a file's stored bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class Flusher:
    """Flushes every open recording at a fixed interval, on a thread of its own.

    A writer with FLUSH_SOON bytes pending asks for a flush at once. The work
    is encoding (orjson, quick) and handing the bytes to the OS and to the
    recording's sha256, both of which release the GIL: so it runs beside the
    relay, on another core when there is one, rather than between its packets.
    """

    def __init__(self, interval: float = 0.25) -> None:
        self._interval = interval
        self._writers: set[RecordingWriter] = set()
        self._wanted: set[RecordingWriter] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="pamgate-recordings", daemon=True)
        self._thread.start()

    def add(self, writer: RecordingWriter) -> None:
        with self._lock:
            self._writers.add(writer)

        def flush_wanted() -> None:
            with self._lock:
                self._wanted.add(writer)
            self._wake.set()

        writer.on_flush_wanted = flush_wanted

    def remove(self, writer: RecordingWriter) -> None:
        with self._lock:
            self._writers.discard(writer)
            self._wanted.discard(writer)

    def flush_all(self) -> None:
        with self._lock:
            writers = list(self._writers)
        for writer in writers:
            if not writer.closed:
                writer.flush()

    def _run(self) -> None:
        due = time.monotonic() + self._interval
        while not self._stopped:
            self._wake.wait(max(due - time.monotonic(), 0))
            self._wake.clear()
            with self._lock:
                wanted, self._wanted = self._wanted, set()
            if time.monotonic() >= due:
                self.flush_all()
                due = time.monotonic() + self._interval
            else:
                for writer in wanted:
                    if not writer.closed:
                        writer.flush()

    def stop(self) -> None:
        """Stop the thread, then write what is pending."""
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout=10)
        self.flush_all()


# -- reading --------------------------------------------------------------------


def open_text(path: Path) -> TextIO:
    """Open a recording for reading as text, whatever its compression."""
    name = path.name
    if name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="\n")
    if name.endswith(".zst"):
        raw = open(path, "rb")  # noqa: SIM115 - closed with the wrapper
        stream = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
        return io.TextIOWrapper(stream, encoding="utf-8", newline="\n")
    return open(path, encoding="utf-8", newline="\n")


def read_header(path: Path) -> dict[str, Any]:
    """The header object of a recording."""
    with open_text(path) as handle:
        line = handle.readline()
    try:
        header = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RecordingError(f"{path}: not an asciicast recording (bad header)") from exc
    if not isinstance(header, dict) or header.get("version") != 2:
        raise RecordingError(f"{path}: not an asciicast v2 recording")
    for side in ("width", "height"):
        value = header.get(side)
        if type(value) is not int or not 1 <= value <= MAX_TERMINAL_SIDE:
            raise RecordingError(
                f"{path}: the header's {side} must be a whole number from 1 to "
                f"{MAX_TERMINAL_SIDE}, not {str(value)[:20]!r}"
            )
    return header


class TornLine(Exception):
    """A line that is not JSON: the end of what a crash left readable."""


def decode_event(line: str | bytes) -> Event | None:
    """The event on one line; None for well-formed JSON that is not an event.

    Raises TornLine if the line is not JSON at all. A recording is hostile
    input, so nothing on the line is trusted: times must be finite numbers,
    code and data strings.
    """
    try:
        value = json.loads(line)
    except (ValueError, TypeError):
        raise TornLine from None
    if not isinstance(value, list) or len(value) != 3:
        return None
    offset, code, data = value
    if (
        isinstance(offset, int | float)
        and not isinstance(offset, bool)
        and math.isfinite(offset)
        and isinstance(code, str)
        and isinstance(data, str)
    ):
        return Event(float(offset), code, data)
    return None


def iter_events(path: Path) -> Iterator[Event]:
    """Events in order. A torn last line (a crash mid-write) ends the stream quietly."""
    with open_text(path) as handle:
        handle.readline()
        for line in handle:
            try:
                event = decode_event(line)
            except TornLine:
                return
            if event is not None:
                yield event


def make_private_dirs(folder: Path) -> None:
    """Create ``folder`` and any missing parents owner-only (0700).

    ``Path.mkdir(parents=True, mode=...)`` applies the mode to the last folder
    only; the year folder of a recordings tree would be world-readable.
    """
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        # Another session may make the same folder at the same moment.
        with contextlib.suppress(FileExistsError):
            created.mkdir(mode=0o700)
