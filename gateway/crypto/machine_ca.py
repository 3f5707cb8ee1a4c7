"""The machine CA: short-lived, scoped OpenSSH user certificates for NHIs.

A separate CA from the upstream one, used for nothing but the machine lane.
Certificates are signed by the stock ``ssh-keygen -s``, so they are exactly
what OpenSSH makes and reads: principal = the NHI name only; key id naming
the NHI, serial, lineage and generation; a serial unique for the life of the database; validity
from now−60 s to now+ttl (ttl ≤ the NHI's maximum); ``force-command`` when
the NHI has exactly one exact command and no SFTP; ``source-address`` when it has
networks; ``permit-pty`` only if allowed; and the extension
``scope@pamgate`` naming the registration.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import BigInteger, bindparam, select
from sqlalchemy.orm import Session

from gateway.crypto.keys import parse_public_key_line
from gateway.errors import CertificateAuthorityError
from gateway.store.models import IssuedCertificate

BACKDATE_SECONDS = 60
#: OpenSSH serials are unsigned 64-bit. Serial 0 means "no serial": OpenSSH never
#: revokes it by serial (krl.c ignores it; ``ssh-keygen -k`` refuses ``serial: 0``).
MAX_SERIAL = 2**64 - 1
#: Past this, a serial cannot even be looked up (SQLite's integers are signed 64-bit);
#: pamgate, which numbers its certificates from 1, never issued one.
_MAX_STORED_SERIAL = 2**63 - 1
#: Lifetime of a certificate when none is asked for (capped at the NHI's maximum).
DEFAULT_CERTIFICATE_TTL = 300
SIGN_TIMEOUT_SECONDS = 5
SCOPE_EXTENSION = "scope@pamgate"


@dataclass(frozen=True)
class CertificateScope:
    """What a machine certificate says about its NHI (the domain decides it)."""

    #: The only principal: the NHI's name.
    principal: str
    #: ``force-command``, when the NHI has exactly one exact command (and no SFTP).
    force_command: str | None
    #: ``source-address`` networks, if any.
    source_addresses: tuple[str, ...]
    permit_pty: bool
    #: The ``scope@pamgate`` extension: the registration (``nhi:NAME``).
    scope_id: str


@dataclass(frozen=True)
class SignedCertificate:
    """A machine certificate just signed."""

    #: The certificate, one OpenSSH line (what ``-cert.pub`` files hold).
    certificate: str
    serial: int
    key_id: str
    key_fingerprint: str
    valid_before: datetime
    ttl_seconds: int


class KeygenCA:
    """A CA key on disk that signs through ``ssh-keygen -s`` (the machine and login CAs)."""

    #: How messages name it ("machine CA").
    label = "CA"

    def __init__(self, key_path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self._key_path = key_path
        self._clock = clock
        self._public_line: str | None = None

    @property
    def key_path(self) -> Path:
        return self._key_path

    def public_key_line(self) -> str:
        """The CA's public key, one OpenSSH line (read once: logins compare against it)."""
        if self._public_line is None:
            try:
                path = self._key_path.with_name(self._key_path.name + ".pub")
                self._public_line = path.read_text().strip()
            except OSError:
                raise CertificateAuthorityError(
                    f"{self.label} key {self._key_path} is missing: run 'pamgate init'"
                ) from None
        return self._public_line

    def public_key_data(self) -> str:
        """The CA's public key as ``TYPE BASE64``."""
        return " ".join(self.public_key_line().split()[:2])


class MachineCA(KeygenCA):
    """Signs NHI certificates with the machine CA key (through ``ssh-keygen``)."""

    label = "machine CA"

    def sign(
        self,
        db: Session,
        scope: CertificateScope,
        public_key_line: str,
        ttl_seconds: int,
        *,
        lineage_id: int,
        generation: int,
    ) -> SignedCertificate:
        """Sign ``public_key_line`` for ``scope`` inside the caller's transaction.

        The caller decided that the NHI may have it, for that long, and audits
        the issue in the same transaction, so a certificate exists in the
        records exactly when its audit event does.
        """
        key_data, fingerprint, _ = parse_public_key_line(public_key_line)
        now = self._clock()
        valid_after, valid_before = int(now) - BACKDATE_SECONDS, int(now) + ttl_seconds
        row = IssuedCertificate(
            ca="machine", key_id="", principal=scope.principal, session_id=None,
            valid_after=datetime.fromtimestamp(valid_after, UTC),
            valid_before=datetime.fromtimestamp(valid_before, UTC),
            issued_at=datetime.fromtimestamp(now, UTC), lineage_id=lineage_id,
            generation=generation, key_fingerprint=fingerprint,
        )  # fmt: skip
        db.add(row)
        db.flush()
        row.key_id = (
            f"pamgate-nhi name={scope.principal} serial={row.serial} lineage={lineage_id} "
            f"gen={generation}"
        )
        validity = (valid_after, valid_before)
        certificate = self._sign(scope, key_data, row.key_id, row.serial, validity)
        return SignedCertificate(
            certificate=certificate, serial=row.serial, key_id=row.key_id,
            key_fingerprint=fingerprint, valid_before=row.valid_before, ttl_seconds=ttl_seconds,
        )  # fmt: skip

    def write_krl(self, spec_lines: list[str], path: Path) -> None:
        """Write an OpenSSH KRL from ``ssh-keygen -k`` spec lines (serial:, id:, key:)."""
        with tempfile.TemporaryDirectory(prefix="pamgate-krl-") as folder:
            spec = Path(folder) / "spec"
            spec.write_text("".join(line + "\n" for line in spec_lines))
            ca_public = Path(folder) / "ca.pub"
            ca_public.write_text(self.public_key_line() + "\n")
            built = Path(folder) / "krl"
            run_keygen(
                ["-k", "-f", str(built), "-s", str(ca_public), str(spec)],
                doing="write the KRL",
                timeout=60,
            )
            # Replace atomically, so sshds reading the file never see half of it.
            staged = path.with_name(f".{path.name}.tmp")
            try:
                shutil.copyfile(built, staged)
                os.replace(staged, path)
            except OSError as exc:
                staged.unlink(missing_ok=True)
                raise CertificateAuthorityError(
                    f"cannot write the KRL to {path}: {exc.strerror}"
                ) from None

    def _sign(
        self,
        scope: CertificateScope,
        key_data: str,
        key_id: str,
        serial: int,
        validity: tuple[int, int],
    ) -> str:
        options = ["-O", "clear"]
        if scope.force_command is not None:
            options += ["-O", f"force-command={scope.force_command}"]
        if scope.source_addresses:
            options += ["-O", f"source-address={','.join(scope.source_addresses)}"]
        if scope.permit_pty:
            options += ["-O", "permit-pty"]
        options += ["-O", f"extension:{SCOPE_EXTENSION}={scope.scope_id}"]
        with tempfile.TemporaryDirectory(prefix="pamgate-issue-") as folder:
            public = Path(folder) / "key.pub"
            # ssh-keygen copies the key's comment into the certificate.
            public.write_text(f"{key_data} {scope.principal} serial {serial}\n")
            # Signing runs inside the caller's write transaction, so it must be quick.
            run_keygen(
                ["-s", str(self._key_path), "-I", key_id, "-n", scope.principal, "-z", str(serial),
                 "-V", keygen_validity(*validity), *options, str(public)],
                doing="sign", timeout=SIGN_TIMEOUT_SECONDS,
            )  # fmt: skip
            return (Path(folder) / "key-cert.pub").read_text().strip()


def issued_certificate(db: Session, serial: int) -> IssuedCertificate | None:
    """The certificate a gateway CA issued with ``serial``, if any (any 64-bit serial)."""
    if not 1 <= serial <= _MAX_STORED_SERIAL:
        return None
    # Bound as BIGINT: on PostgreSQL the column is a 32-bit INTEGER, and a serial above
    # 2^31 bound as one would be an error instead of "no such certificate".
    wanted = bindparam("serial", serial, type_=BigInteger)
    return db.scalars(select(IssuedCertificate).where(IssuedCertificate.serial == wanted)).first()


def run_keygen(args: list[str], *, doing: str, timeout: float) -> None:
    """Run ``ssh-keygen -q ARGS``; CertificateAuthorityError saying what failed (both of the
    gateway's CAs that sign keys clients bring sign with the stock ``ssh-keygen -s``)."""
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise CertificateAuthorityError(f"ssh-keygen is needed to {doing}: install openssh-client")
    try:
        result = subprocess.run(
            [keygen, "-q", *args], capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise CertificateAuthorityError(f"ssh-keygen took too long to {doing}") from None
    if result.returncode != 0:
        raise CertificateAuthorityError(f"ssh-keygen could not {doing}: {result.stderr.strip()}")


def keygen_validity(valid_after: int, valid_before: int) -> str:
    """``ssh-keygen -V`` for a validity window given as epoch seconds."""
    return f"{keygen_time(valid_after)}:{keygen_time(valid_before)}"


def keygen_time(epoch: int) -> str:
    """An epoch time as ``ssh-keygen -V`` takes it: absolute UTC, so the certificate says
    exactly what the records say."""
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(epoch))
