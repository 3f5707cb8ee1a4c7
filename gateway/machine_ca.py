"""The machine CA: short-lived, scoped OpenSSH user certificates for NHIs.

A separate CA from the upstream one, used for nothing but the machine lane.
Certificates are signed by the stock ``ssh-keygen -s``, so they are exactly
what OpenSSH makes and reads: principal = the NHI name only; key id naming
the NHI and serial; a serial unique for the life of the database; validity
from now−60 s to now+ttl (ttl ≤ the NHI's maximum); ``force-command`` when
the NHI has exactly one exact command; ``source-address`` when it has
networks; ``permit-pty`` only if allowed; and the extension
``scope@pamgate`` naming the registration.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from gateway.audit import ActorType, AuditEvent, AuditLog, Trail, admin_authority
from gateway.errors import CertificateAuthorityError
from gateway.identities import parse_public_key_line
from gateway.machines import MachineError, MachineView
from gateway.models import IssuedCertificate
from gateway.store import Store

BACKDATE_SECONDS = 60
SCOPE_EXTENSION = "scope@pamgate"


class MachineCA:
    """Signs NHI certificates with the machine CA key (through ``ssh-keygen``)."""

    def __init__(
        self,
        key_path: Path,
        store: Store,
        audit: AuditLog,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key_path = key_path
        self._store = store
        self._audit = audit
        self._clock = clock

    def public_key_line(self) -> str:
        """The CA's public key, one OpenSSH line."""
        try:
            return self._key_path.with_name(self._key_path.name + ".pub").read_text().strip()
        except OSError:
            raise CertificateAuthorityError(
                f"machine CA key {self._key_path} is missing: run 'pamgate init'"
            ) from None

    def issue(self, nhi: MachineView, public_key_line: str, ttl_seconds: int, *, actor: str) -> str:
        """Sign ``public_key_line`` for ``nhi``; returns the certificate (one OpenSSH line)."""
        if nhi.status != "active":
            raise MachineError(f"{nhi.name!r} is {nhi.status}: no certificates")
        if not 60 <= ttl_seconds <= nhi.max_ttl_seconds:
            raise MachineError(
                f"--ttl must be between 1m and {nhi.name}'s maximum of {nhi.max_ttl_seconds // 60}m"
            )
        key_data, fingerprint, _ = parse_public_key_line(public_key_line)
        keygen = shutil.which("ssh-keygen")
        if keygen is None:
            raise CertificateAuthorityError("ssh-keygen is needed to sign: install openssh-client")
        now = self._clock()
        valid_after, valid_before = int(now) - BACKDATE_SECONDS, int(now) + ttl_seconds
        with self._store.transaction() as db:
            row = IssuedCertificate(
                ca="machine", key_id="", principal=nhi.name, session_id=None,
                valid_after=datetime.fromtimestamp(valid_after, UTC),
                valid_before=datetime.fromtimestamp(valid_before, UTC),
                issued_at=datetime.fromtimestamp(now, UTC),
            )  # fmt: skip
            db.add(row)
            db.flush()
            row.key_id = f"pamgate-nhi name={nhi.name} serial={row.serial}"
            certificate = self._sign(keygen, nhi, key_data, row.key_id, row.serial, ttl_seconds)
            record = self._audit.append(db, Trail.MACHINE, AuditEvent(
                actor=actor, actor_type=ActorType.ADMIN, action="machine.certificate_issued",
                target=f"nhi:{nhi.name}", authority=admin_authority(actor),
                details={"serial": row.serial, "key": fingerprint, "ttl_seconds": ttl_seconds,
                         "scope": nhi.scope_id},
            ))  # fmt: skip
        self._audit.committed(record)
        return certificate

    def _sign(
        self, keygen: str, nhi: MachineView, key_data: str, key_id: str, serial: int, ttl: int
    ) -> str:
        options = ["-O", "clear"]
        exact = [c for c in nhi.commands if not c.startswith("re:")]
        if len(nhi.commands) == 1 and exact:
            options += ["-O", f"force-command={exact[0]}"]
        if nhi.sources:
            options += ["-O", f"source-address={','.join(nhi.sources)}"]
        if nhi.allow_pty:
            options += ["-O", "permit-pty"]
        options += ["-O", f"extension:{SCOPE_EXTENSION}={nhi.scope_id}"]
        with tempfile.TemporaryDirectory(prefix="pamgate-issue-") as folder:
            public = Path(folder) / "key.pub"
            public.write_text(key_data + "\n")
            result = subprocess.run(
                [keygen, "-q", "-s", str(self._key_path), "-I", key_id, "-n", nhi.name,
                 "-z", str(serial), "-V", f"-{BACKDATE_SECONDS}s:+{ttl}s", *options, str(public)],
                capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            if result.returncode != 0:
                raise CertificateAuthorityError(
                    f"ssh-keygen could not sign: {result.stderr.strip()}"
                )
            return (Path(folder) / "key-cert.pub").read_text().strip()
