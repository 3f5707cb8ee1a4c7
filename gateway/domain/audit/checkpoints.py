"""Audit checkpoints: the head hash of each trail, signed with the gateway's audit key.

A hash chain shows that nothing inside it changed, but not that its tail was
cut off, or that the whole chain was rewritten with fresh hashes. A signed
checkpoint copied off the box pins "event N had hash H" at a point in time;
``pamgate audit verify --checkpoints FILE`` then detects either.

Checkpoints are made periodically by ``pamgate serve`` and on demand with
``pamgate audit checkpoint``. Each node appends its own to
``DATA_DIR/audit/checkpoints.jsonl`` (fsynced) and to the database's
``audit_checkpoints`` rows under its node name, so that verifying on any node
checks every node's checkpoints. They are signed with the node's audit signing
key, which every node sharing a database must hold (the node registry refuses a
node whose key differs): one public key checks them all, and a row forged or
altered in the database fails its signature.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select

from gateway.domain.audit.trail import AuditLog, Trail
from gateway.errors import PamgateError
from gateway.store.database import Store
from gateway.store.models import AuditCheckpointRecord


class CheckpointError(PamgateError):
    """A checkpoint file or signing key is missing, unreadable or forged."""


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement: in ``trail``, event ``seq`` had hash ``hash`` at ``ts``."""

    trail: str
    seq: int
    hash: str
    ts: str
    node: str
    signature: str

    def signed_bytes(self) -> bytes:
        body = {
            "trail": self.trail,
            "seq": self.seq,
            "hash": self.hash,
            "ts": self.ts,
            "node": self.node,
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def ensure_signing_key(path: Path) -> bool:
    """Create the Ed25519 audit signing key (PEM, mode 0600) unless it exists."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path.with_name(path.name + ".pub").write_bytes(public)
    return True


def _load_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read audit signing key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointError(f"{path} is not an Ed25519 key")
    return key


def _load_public(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read audit public key {path}: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CheckpointError(f"{path} is not an Ed25519 public key")
    return key


class CheckpointBook:
    """Writes and checks the signed checkpoints of one gateway."""

    def __init__(
        self,
        audit: AuditLog,
        key_path: Path,
        checkpoints_path: Path,
        node: str,
        *,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._audit = audit
        self._key_path = key_path
        self.path = checkpoints_path
        self._node = node
        #: Where every node's checkpoint rows are (None: the file only).
        self._store = store
        self._clock = clock

    def checkpoint(self) -> list[Checkpoint]:
        """Sign the current head of both trails and append them to the checkpoint file."""
        key = _load_private(self._key_path)
        ts = datetime.fromtimestamp(self._clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        made = []
        for trail in Trail:
            seq, head_hash = self._audit.head(trail)
            unsigned = Checkpoint(trail.value, seq, head_hash, ts, self._node, "")
            signature = base64.b64encode(key.sign(unsigned.signed_bytes())).decode()
            made.append(Checkpoint(trail.value, seq, head_hash, ts, self._node, signature))
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.path, "a", encoding="utf-8") as handle:
            for checkpoint in made:
                handle.write(json.dumps(checkpoint.__dict__, separators=(",", ":")) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        if self._store is not None:
            with self._store.transaction() as db:
                db.add_all(
                    AuditCheckpointRecord(
                        node=c.node,
                        trail=c.trail,
                        seq=c.seq,
                        hash=c.hash,
                        ts=c.ts,
                        signature=c.signature,
                    )  # fmt: skip
                    for c in made
                )
        return made

    def read(self, path: Path | None = None) -> list[Checkpoint]:
        """Checkpoints from ``path`` (default: this gateway's file) and every node's in the
        database, signatures checked; CheckpointError names the first forged or altered one."""
        source = path or self.path
        from_file = []
        if source.exists():
            from_file = self.parse(source.read_text(encoding="utf-8"), str(source))
        return self.with_stored(from_file)

    def with_stored(self, checkpoints: list[Checkpoint]) -> list[Checkpoint]:
        """``checkpoints`` (from a file) and every node's in the database, each once."""
        # A node's own file lines are rows too.
        seen = set(checkpoints)
        return checkpoints + [c for c in self.stored() if c not in seen]

    def stored(self) -> list[Checkpoint]:
        """Every node's checkpoints in the database, oldest first, signatures checked."""
        if self._store is None:
            return []
        public = _load_public(self._key_path.with_name(self._key_path.name + ".pub"))
        with self._store.transaction(write=False) as db:
            rows = db.scalars(
                select(AuditCheckpointRecord).order_by(AuditCheckpointRecord.id)
            ).all()
            found = []
            for row in rows:
                checkpoint = Checkpoint(row.trail, row.seq, row.hash, row.ts, row.node,
                                        row.signature)  # fmt: skip
                try:
                    public.verify(base64.b64decode(row.signature), checkpoint.signed_bytes())
                except (ValueError, InvalidSignature):
                    raise CheckpointError(
                        f"checkpoint #{row.id} of node {row.node} in the database is not "
                        "validly signed (forged or altered)"
                    ) from None
                found.append(checkpoint)
        return found

    def parse(self, text: str, source: str) -> list[Checkpoint]:
        """Checkpoints from JSON lines (a copy of a checkpoint file), signatures checked;
        ``source`` names where they came from in errors."""
        public = _load_public(self._key_path.with_name(self._key_path.name + ".pub"))
        found = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                checkpoint = Checkpoint(**json.loads(line))
                public.verify(base64.b64decode(checkpoint.signature), checkpoint.signed_bytes())
            except (ValueError, TypeError, InvalidSignature) as exc:
                raise CheckpointError(
                    f"{source}:{number}: not a valid signed checkpoint ({type(exc).__name__})"
                ) from None
            found.append(checkpoint)
        return found

    def problems(self, trail: Trail, checkpoints: Iterable[Checkpoint]) -> str | None:
        """Say how the trail contradicts a checkpoint, or None if it agrees with all of them."""
        head_seq, _ = self._audit.head(trail)
        for checkpoint in checkpoints:
            if checkpoint.trail != trail.value or checkpoint.seq == 0:
                continue
            stored = self._audit.hash_at(trail, checkpoint.seq)
            if stored is None:
                return (
                    f"checkpoint of {checkpoint.ts} vouches for event {checkpoint.seq}, "
                    f"but the trail ends at event {head_seq} (truncated)"
                )
            if stored != checkpoint.hash:
                return (
                    f"event {checkpoint.seq} does not match the checkpoint of {checkpoint.ts} "
                    "(the chain was rewritten)"
                )
        return None
