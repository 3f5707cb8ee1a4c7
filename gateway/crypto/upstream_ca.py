"""The upstream CA: per-session certificates the gateway uses to log in to targets.

Targets trust this CA through ``TrustedUserCAKeys``. For every session the
gateway generates a fresh key pair and signs a user certificate that names
only the target account, lasts at most two minutes (backdated up to 60 s for
clock skew), carries a key id naming the user and session, and has a serial
that is unique for the life of the database (the row id of
:class:`~gateway.store.models.IssuedCertificate`). Nothing is reusable afterwards.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncssh

from gateway.errors import CertificateAuthorityError
from gateway.store.database import Store
from gateway.store.models import IssuedCertificate

CA_KEY_ALGORITHM = "ssh-ed25519"
SESSION_KEY_ALGORITHM = "ssh-ed25519"


@dataclass(frozen=True)
class UpstreamCredential:
    """A session's private key and the certificate that vouches for it."""

    private_key: asyncssh.SSHKey
    certificate: asyncssh.SSHCertificate
    serial: int
    key_id: str
    valid_before: datetime


def ensure_key_file(path: Path, comment: str, algorithm: str = CA_KEY_ALGORITHM) -> bool:
    """Create an OpenSSH private key at ``path`` (mode 0600) unless one exists.

    Returns True if a key was created. An existing key is never overwritten.
    """
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = asyncssh.generate_private_key(algorithm, comment=comment)
    # Write to a temporary name and link into place, so a crash never leaves
    # a half-written key and a concurrent init never overwrites one.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.export_private_key())
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(temporary, path)
    except FileExistsError:
        return False
    finally:
        temporary.unlink()
    path.with_name(path.name + ".pub").write_bytes(key.export_public_key())
    return True


def load_private_key(path: Path, what: str) -> asyncssh.SSHKey:
    """Read an OpenSSH private key, with a clear error naming ``what`` it is for."""
    try:
        return asyncssh.read_private_key(path)
    except FileNotFoundError:
        raise CertificateAuthorityError(
            f"{what} key {path} is missing: run 'pamgate init' first"
        ) from None
    except (OSError, asyncssh.KeyImportError) as exc:
        raise CertificateAuthorityError(f"cannot read {what} key {path}: {exc}") from None


class UpstreamCA:
    """Signs the per-session certificates used towards targets."""

    def __init__(
        self,
        ca_key: asyncssh.SSHKey,
        store: Store,
        *,
        ttl_seconds: int = 120,
        backdate_seconds: int = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ca_key = ca_key
        self._store = store
        self._ttl = ttl_seconds
        self._backdate = backdate_seconds
        self._clock = clock

    @classmethod
    def from_file(cls, path: Path, store: Store, **kwargs: object) -> UpstreamCA:
        """Load the CA from its private key file."""
        return cls(load_private_key(path, "upstream CA"), store, **kwargs)  # type: ignore[arg-type]

    def public_key_line(self) -> str:
        """The CA public key as one OpenSSH line, for a target's ``TrustedUserCAKeys``."""
        return self._ca_key.export_public_key().decode().strip()

    def mint_upstream_certificate(
        self, *, user: str, account: str, session_id: str, port_forwarding: bool = False
    ) -> UpstreamCredential:
        """Generate a fresh key and a short-lived certificate for one session.

        ``port_forwarding`` is set only for the connections that carry an
        allowed ``ssh -L``; session certificates never permit forwarding.

        The serial is reserved in the store before signing, so it is unique
        even across gateway restarts and several nodes.
        """
        now = self._clock()
        valid_after = int(now) - self._backdate
        valid_before = int(now) + self._ttl
        key_id = f"pamgate user={user} session={session_id} account={account}"
        with self._store.transaction() as db:
            row = IssuedCertificate(
                ca="upstream",
                key_id=key_id,
                principal=account,
                session_id=session_id,
                valid_after=datetime.fromtimestamp(valid_after, UTC),
                valid_before=datetime.fromtimestamp(valid_before, UTC),
                issued_at=datetime.fromtimestamp(now, UTC),
            )
            db.add(row)
            db.flush()
            serial = row.serial
        session_key = asyncssh.generate_private_key(SESSION_KEY_ALGORITHM)
        certificate = self._ca_key.generate_user_certificate(
            session_key,
            key_id,
            serial=serial,
            principals=[account],
            valid_after=valid_after,
            valid_before=valid_before,
            permit_x11_forwarding=False,
            permit_agent_forwarding=False,
            permit_port_forwarding=port_forwarding,
            permit_pty=True,
            permit_user_rc=False,
        )
        return UpstreamCredential(
            private_key=session_key,
            certificate=certificate,
            serial=serial,
            key_id=key_id,
            valid_before=datetime.fromtimestamp(valid_before, UTC),
        )
