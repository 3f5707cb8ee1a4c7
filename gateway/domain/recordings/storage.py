"""Where recordings are kept: the storage seam between the recorder and the files.

A recording is written as the session runs (appends, flushed every few
hundred milliseconds) and sealed when it ends; after that it only gets read
(replay, export, verification). The recorder therefore always writes to a
local path, and a store decides:

- where a new session's recording is written (:meth:`RecordingStore.new_path`);
- the key stored with the session (:meth:`RecordingStore.key`), the same on every node;
- where to read a recording from, given its key (:meth:`RecordingStore.local_path`);
- what happens once it is sealed (:meth:`RecordingStore.sealed`).

:class:`SharedDirectory` is the one store today: a folder every node mounts
(NFS, CephFS, EFS...). File names are the session id, a random 128-bit
UUID, and files are created with ``O_EXCL``, so two nodes never write the
same file. An S3-compatible store would implement the same four methods:
write to a local spool, upload in :meth:`sealed` (then the session's
sha256, already in the audit trail, covers the object), and download to a
cache in :meth:`local_path`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Protocol


class RecordingStore(Protocol):
    """Storage of session recordings (see the module docstring)."""

    def new_path(self, session_id: str, started: datetime) -> Path:
        """The local file a new session's recording is written to."""
        ...

    def key(self, path: Path) -> str:
        """The key of the recording at ``path``, as stored with its session."""
        ...

    def local_path(self, key: str) -> Path | None:
        """A readable local file for the recording ``key``, or None if it is missing."""
        ...

    def sealed(self, path: Path) -> None:
        """The recording at ``path`` is final: keep it (a remote store uploads it here)."""
        ...


class SharedDirectory:
    """Recordings in one folder tree, ``ROOT/YYYY/MM/DD/<session>.cast``, shared by all nodes."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def new_path(self, session_id: str, started: datetime) -> Path:
        return self.root / f"{started:%Y/%m/%d}" / f"{session_id}.cast"

    def key(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def local_path(self, key: str) -> Path | None:
        candidate = (self.root / key).resolve()
        # A key comes from the database: it must not lead out of the folder.
        if not candidate.is_relative_to(self.root.resolve()) or not candidate.exists():
            return None
        return candidate

    def sealed(self, path: Path) -> None:
        """Nothing to do: the file is already where every node reads it."""
