"""Where recordings are kept: the storage seam between the recorder and the files.

A recording is written as the session runs (appends, flushed every few
hundred milliseconds) and sealed when it ends; after that it only gets read
(replay, export, verification). The recorder therefore always writes to a
local path, and a store decides:

- where a new session's recording is written (:meth:`RecordingStore.new_path`);
- the key stored with the session (:meth:`RecordingStore.key`), the same on every node;
- what happens while it is written (:meth:`RecordingStore.opened`,
  :meth:`RecordingStore.finishing`, :meth:`RecordingStore.discarded`);
- what happens once it is sealed (:meth:`RecordingStore.sealed`);
- where to read a recording from, given its key (:meth:`RecordingStore.local_path`);
- what an interrupted session's recording is, as found (:meth:`RecordingStore.recover`).

Two stores:

:class:`SharedDirectory`: a folder every node mounts (NFS, CephFS, EFS...).
File names are the session id, a random 128-bit UUID, and files are created
with ``O_EXCL``, so two nodes never write the same file.

:class:`ObjectStore`: an S3-compatible bucket, with no shared folder. A live
recording is written to this node's spool; every ``upload_interval`` seconds
its new complete lines go up as one *chunk object*
(``PREFIX/KEY.parts/00000000``, ``00000001``...), the first (the header)
before the session starts, so a session the bucket cannot take is refused.
S3's multipart upload would need 5 MiB parts, which a quiet terminal takes
hours to fill; chunk objects have no minimum, so a node that dies loses at
most the last interval. A chunk that cannot be uploaded fails the recording,
and the session ends (fail closed). At the end the sealed file goes up whole
as ``PREFIX/KEY`` (S3 checks its sha256 on arrival; retained under object
lock when configured) and the chunks are deleted. The node that seals an
interrupted session (:meth:`ObjectStore.recover`) puts the chunks together
(or its own spool, when it is the node that wrote it) into that same final
object. Readers on any node download a final object to a local cache, kept
while the object's ETag is unchanged, so a replaced object is fetched again
and fails verification.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Protocol

from gateway.config import RecordingSettings
from recordings.asciicast import RecordingWriter, SealedRecording, file_sha256, make_private_dirs

logger = logging.getLogger("pamgate.recordings")

#: Largest chunk object one upload round sends for one session (a busy session sends several).
MAX_CHUNK_BYTES = 32 * 1024 * 1024
#: Chunk uploads running at once (one per live session at most).
UPLOAD_WORKERS = 8


class RecordingStore(Protocol):
    """Storage of session recordings (see the module docstring)."""

    def new_path(self, session_id: str, started: datetime) -> Path:
        """The local file a new session's recording is written to."""
        ...

    def key(self, path: Path) -> str:
        """The key of the recording at ``path``, as stored with its session."""
        ...

    def opened(self, writer: RecordingWriter) -> None:
        """A new recording's header is written; raises OSError if it cannot be stored."""
        ...

    def finishing(self, path: Path) -> None:
        """The recording at ``path`` is about to be sealed: its live upload stops."""
        ...

    def discarded(self, path: Path) -> None:
        """The recording at ``path`` belongs to a session that never started."""
        ...

    def sealed(self, recording: SealedRecording) -> None:
        """The recording is final: keep it (raises OSError if it cannot be kept)."""
        ...

    def local_path(self, key: str) -> Path | None:
        """A readable local file for the recording ``key``, or None if it is missing.

        Raises OSError if the store cannot be reached.
        """
        ...

    def recover(self, key: str) -> Path | None:
        """What an interrupted session's recording ``key`` holds, made final; None if nothing.

        Raises OSError if the store cannot be reached.
        """
        ...

    def close(self) -> None:
        """Stop background work (live uploads)."""
        ...

    def check(self) -> str:
        """Where recordings go, for ``pamgate status``; raises OSError if they cannot go there."""
        ...


def _inside(root: Path, key: str) -> Path | None:
    """``root / key``, or None if the key leads out of ``root`` (a key comes from the database)."""
    candidate = (root / key).resolve()
    return candidate if candidate.is_relative_to(root.resolve()) else None


class SharedDirectory:
    """Recordings in one folder tree, ``ROOT/YYYY/MM/DD/<session>.cast``, shared by all nodes."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def new_path(self, session_id: str, started: datetime) -> Path:
        return self.root / f"{started:%Y/%m/%d}" / f"{session_id}.cast"

    def key(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def opened(self, writer: RecordingWriter) -> None:
        """Nothing to do: the file is already where every node reads it."""

    def finishing(self, path: Path) -> None:
        """Nothing to do."""

    def discarded(self, path: Path) -> None:
        """Nothing to do (the service removes the file)."""

    def sealed(self, recording: SealedRecording) -> None:
        """Nothing to do: the file is already where every node reads it."""

    def local_path(self, key: str) -> Path | None:
        candidate = _inside(self.root, key)
        return candidate if candidate is not None and candidate.exists() else None

    def recover(self, key: str) -> Path | None:
        """The file as the crash left it."""
        return self.local_path(key)

    def close(self) -> None:
        """Nothing runs in the background."""

    def check(self) -> str:
        # The folder is made with the first recording: until then its nearest existing
        # parent must let this user make it.
        existing = self.root
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise OSError(f"the recordings folder {self.root} cannot be written by this user "
                          f"({existing} is not a writable folder)")  # fmt: skip
        made = "" if existing == self.root else ", made with the first recording"
        return f"folder {self.root}{made}"


class Bucket(Protocol):
    """One S3-compatible bucket, as :class:`ObjectStore` uses it.

    Names are full object keys. Every method raises OSError when the bucket
    cannot be reached or refuses.
    """

    #: The bucket's name.
    bucket: str

    def put_bytes(self, name: str, data: bytes) -> None:
        """Store ``data`` as object ``name``."""
        ...

    def put_file(self, name: str, path: Path, *, sha256: str) -> str:
        """Store the file as object ``name``, checked on arrival against ``sha256`` and
        retained under object lock when configured; returns its ETag."""
        ...

    def etag(self, name: str) -> str | None:
        """The ETag of object ``name``, or None if there is none."""
        ...

    def download(self, name: str, path: Path) -> str:
        """Write object ``name`` to ``path``; returns the ETag of what was written."""
        ...

    def names(self, prefix: str) -> list[str]:
        """The names of the objects starting with ``prefix``, sorted."""
        ...

    def delete(self, names: list[str]) -> None:
        """Delete these objects."""
        ...


class _LiveUpload:
    """One live recording's upload: how far the file has gone up, and the next chunk."""

    def __init__(self, writer: RecordingWriter, chunks: str) -> None:
        self.writer = writer
        #: Chunk names are this plus a zero-padded sequence number.
        self.chunks = chunks
        self.offset = 0
        self.next_chunk = 0
        self.lock = threading.Lock()
        self.stopped = False


class ObjectStore:
    """Recordings in an S3-compatible bucket (see the module docstring).

    ``root`` is this node's own folder: ``spool/`` for live recordings,
    ``cache/`` for downloaded ones (safe to empty at any time).
    """

    def __init__(self, bucket: Bucket, *, prefix: str, root: Path, upload_interval: float) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.spool = root / "spool"
        self.cache = root / "cache"
        self.upload_interval = upload_interval
        self._live: dict[Path, _LiveUpload] = {}
        self._live_lock = threading.Lock()
        self._stopping = threading.Event()
        self._uploader: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    # -- writing ----------------------------------------------------------------

    def new_path(self, session_id: str, started: datetime) -> Path:
        return self.spool / f"{started:%Y/%m/%d}" / f"{session_id}.cast"

    def key(self, path: Path) -> str:
        return str(path.relative_to(self.spool))

    def object_name(self, key: str) -> str:
        """The object a sealed recording ``key`` is stored as."""
        return self.prefix + key

    def chunk_prefix(self, key: str) -> str:
        """What the chunk objects of the live recording ``key`` start with."""
        return f"{self.prefix}{key}.parts/"

    def opened(self, writer: RecordingWriter) -> None:
        """Upload the header now (OSError: the bucket cannot take it), then every interval."""
        upload = _LiveUpload(writer, self.chunk_prefix(self.key(writer.path)))
        self._upload_new_lines(upload)
        with self._live_lock:
            self._live[writer.path] = upload
            if self._uploader is None:
                self._pool = ThreadPoolExecutor(UPLOAD_WORKERS, "recording-upload")
                self._uploader = threading.Thread(
                    target=self._upload_every_interval, name="recording-uploads", daemon=True
                )
                self._uploader.start()

    def _upload_every_interval(self) -> None:
        while not self._stopping.wait(self.upload_interval):
            with self._live_lock:
                uploads = list(self._live.values())
            assert self._pool is not None
            list(self._pool.map(self._upload_or_fail, uploads))

    def _upload_or_fail(self, upload: _LiveUpload) -> None:
        try:
            self._upload_new_lines(upload)
        except OSError as exc:
            with self._live_lock:
                self._live.pop(upload.writer.path, None)
            upload.writer.fail(f"recording storage failed: cannot upload to the bucket: {exc}")

    def _upload_new_lines(self, upload: _LiveUpload) -> None:
        """Send the complete lines written since the last chunk, as the next chunk(s)."""
        with upload.lock:
            if upload.stopped:
                return
            with open(upload.writer.path, "rb") as handle:
                handle.seek(upload.offset)
                while data := handle.read(MAX_CHUNK_BYTES):
                    # Whole lines only, so the chunks put together end cleanly.
                    end = data.rfind(b"\n") + 1
                    if end == 0:
                        return
                    name = f"{upload.chunks}{upload.next_chunk:08d}"
                    self.bucket.put_bytes(name, data[:end])
                    upload.offset += end
                    upload.next_chunk += 1
                    handle.seek(upload.offset)

    def finishing(self, path: Path) -> None:
        """Stop the live upload (waiting for one under way): the sealed file follows whole."""
        with self._live_lock:
            upload = self._live.pop(path, None)
        if upload is not None:
            with upload.lock:
                upload.stopped = True

    def discarded(self, path: Path) -> None:
        """Stop the live upload and remove the chunks of a session that never started."""
        self.finishing(path)
        try:
            self.bucket.delete(self.bucket.names(self.chunk_prefix(self.key(path))))
        except OSError as exc:
            logger.warning("cannot delete the chunks of discarded recording %s: %s", path, exc)

    def sealed(self, recording: SealedRecording) -> None:
        """Upload the sealed file as the final object, keep it as cached, drop the chunks."""
        key = self.key(recording.path)
        etag = self.bucket.put_file(self.object_name(key), recording.path, sha256=recording.sha256)
        self._keep_cached(recording.path, key, etag)
        self._drop_chunks(self._live_key(key))

    def _drop_chunks(self, key: str) -> None:
        try:
            self.bucket.delete(self.bucket.names(self.chunk_prefix(key)))
        except OSError as exc:
            # Left-over chunks cost space, nothing else: the final object is what is read.
            logger.warning("cannot delete the chunks of recording %s: %s", key, exc)

    @staticmethod
    def _live_key(key: str) -> str:
        """The key a recording had while live (a compressed one's ends in .gz or .zst)."""
        return key.removesuffix(".gz").removesuffix(".zst")

    # -- reading --------------------------------------------------------------

    def local_path(self, key: str) -> Path | None:
        """This node's spool file, else the final object (cached), else the chunks so far."""
        spooled, cached = _inside(self.spool, key), _inside(self.cache, key)
        if spooled is None or cached is None:
            return None
        if spooled.exists():
            return spooled
        etag = self.bucket.etag(self.object_name(key))
        if etag is not None:
            return self._cached(key, cached, etag)
        return self._assembled(key)

    def _cached(self, key: str, cached: Path, etag: str) -> Path:
        """The cached copy of a final object, downloaded again unless its ETag is the same."""
        stamp = cached.with_name(cached.name + ".etag")
        if cached.exists() and stamp.exists() and stamp.read_text() == etag:
            return cached
        make_private_dirs(cached.parent)
        partial = cached.with_name(f".{cached.name}.{os.getpid()}.{threading.get_ident()}")
        etag = self.bucket.download(self.object_name(key), partial)
        partial.rename(cached)
        stamp.write_text(etag)
        return cached

    def _keep_cached(self, path: Path, key: str, etag: str) -> None:
        cached = _inside(self.cache, key)
        assert cached is not None
        make_private_dirs(cached.parent)
        path.rename(cached)
        cached.with_name(cached.name + ".etag").write_text(etag)

    def _assembled(self, key: str) -> Path | None:
        """The chunks of a live (or interrupted) recording put together, or None if none."""
        chunks = self.bucket.names(self.chunk_prefix(key))
        if not chunks:
            return None
        target = _inside(self.cache / "partial", key)
        assert target is not None
        make_private_dirs(target.parent)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}")
        piece = temporary.with_name(temporary.name + ".chunk")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                self.bucket.download(chunk, piece)
                out.write(piece.read_bytes())
        piece.unlink(missing_ok=True)
        temporary.rename(target)
        return target

    def recover(self, key: str) -> Path | None:
        """Make the final object of an interrupted recording from what was uploaded.

        This node's own spool file if it wrote the session (it holds even the
        last interval), else the chunks. Done once: a final object already
        there is what was recovered before.
        """
        if self.bucket.etag(self.object_name(key)) is not None:
            return self.local_path(key)
        spooled = _inside(self.spool, key)
        found = spooled if spooled is not None and spooled.exists() else self._assembled(key)
        if found is None:
            return None
        etag = self.bucket.put_file(self.object_name(key), found, sha256=file_sha256(found))
        self._keep_cached(found, key, etag)
        self._drop_chunks(key)
        return _inside(self.cache, key)

    def close(self) -> None:
        """Stop the uploader: sessions still live on a stopping node are sealed by their end."""
        self._stopping.set()
        if self._uploader is not None:
            self._uploader.join(timeout=30)
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def check(self) -> str:
        # A listing under a name nobody writes: empty, or why the bucket cannot answer (a
        # HEAD would not do: S3 answers a missing bucket's HEAD with a bare 404, as for a
        # missing object).
        self.bucket.names(f"{self.prefix}.pamgate-status-probe")
        return f"bucket {self.bucket.bucket}, prefix {self.prefix or '(none)'}"


def open_recording_store(settings: RecordingSettings, root: Path) -> RecordingStore:
    """The store ``[recordings] url`` names: empty for the folder ``root``, ``s3://`` for a
    bucket (``root`` is then this node's spool and cache)."""
    if not settings.url:
        return SharedDirectory(root)
    # Loaded only here: a node that keeps recordings in a folder never imports the S3 client.
    from gateway.store.objects import S3Bucket

    return ObjectStore(
        S3Bucket.from_settings(settings),
        prefix=settings.prefix,
        root=root,
        upload_interval=settings.s3_upload_interval_seconds,
    )
