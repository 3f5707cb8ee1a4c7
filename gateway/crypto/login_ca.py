"""The login CA: short-lived OpenSSH user certificates for people (``pamgate-login``).

A third CA, apart from the upstream CA (targets trust it) and the machine CA
(NHIs): its certificates log a person in to the human lane, and nowhere else,
for a working day after one sign-in with both factors. They are signed by the
stock ``ssh-keygen -s`` so that the stock client picks them up
(``KEY-cert.pub`` next to ``KEY``): principal = the pamgate user only; key id
naming user and serial; a serial unique for the life of the database (shared
with the other CAs); validity from now−60 s to now+ttl; ``permit-pty`` and
``permit-port-forwarding`` (the lane and the policy decide both; asyncssh
refuses what the certificate does not permit before asking); no agent or X11
forwarding, no user rc; and ``source-address`` when the certificate is bound
to the address it was issued to.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.orm import Session

from gateway.crypto.keys import parse_public_key_line
from gateway.crypto.machine_ca import (
    BACKDATE_SECONDS,
    SIGN_TIMEOUT_SECONDS,
    KeygenCA,
    keygen_validity,
    run_keygen,
)
from gateway.store.models import IssuedCertificate

#: The ``ca`` column of the login CA's rows in ``issued_certificates``.
LOGIN_CA = "login"
#: What a login certificate permits, as ``ssh-keygen -O`` options after ``clear``.
LOGIN_CERTIFICATE_PERMISSIONS = ("permit-pty", "permit-port-forwarding")


@dataclass(frozen=True)
class SignedLoginCertificate:
    """A login certificate just signed."""

    #: The certificate, one OpenSSH line (what ``-cert.pub`` files hold).
    certificate: str
    serial: int
    key_id: str
    key_fingerprint: str
    valid_before: datetime
    ttl_seconds: int
    source_address: str | None


class LoginCA(KeygenCA):
    """Signs people's login certificates with the login CA key (through ``ssh-keygen``)."""

    label = "login CA"

    def sign(
        self,
        db: Session,
        user: str,
        public_key_line: str,
        ttl_seconds: int,
        *,
        source_address: str | None,
        mfa_at: datetime,
    ) -> SignedLoginCertificate:
        """Sign ``public_key_line`` for ``user`` inside the caller's transaction.

        The caller decided that the user may have it, for that long, and audits
        the issue in the same transaction, so a certificate exists in the
        records exactly when its audit event does.
        """
        self.public_key_line()  # a missing CA key is reported before anything is written
        key_data, fingerprint, _ = parse_public_key_line(public_key_line)
        now = self._clock()
        valid_after, valid_before = int(now) - BACKDATE_SECONDS, int(now) + ttl_seconds
        row = IssuedCertificate(
            ca=LOGIN_CA, key_id="", principal=user, session_id=None,
            valid_after=datetime.fromtimestamp(valid_after, UTC),
            valid_before=datetime.fromtimestamp(valid_before, UTC),
            issued_at=datetime.fromtimestamp(now, UTC), lineage_id=None, generation=None,
            key_fingerprint=fingerprint, source_address=source_address, mfa_at=mfa_at,
        )  # fmt: skip
        db.add(row)
        db.flush()
        row.key_id = f"pamgate-login user={user} serial={row.serial}"
        options = ["-O", "clear"]
        for permission in LOGIN_CERTIFICATE_PERMISSIONS:
            options += ["-O", permission]
        if source_address is not None:
            options += ["-O", f"source-address={source_address}"]
        with tempfile.TemporaryDirectory(prefix="pamgate-login-") as folder:
            public = Path(folder) / "key.pub"
            # ssh-keygen copies the key's comment into the certificate.
            public.write_text(f"{key_data} {user} login serial {row.serial}\n")
            # Signing runs inside the caller's write transaction, so it must be quick.
            run_keygen(
                ["-s", str(self._key_path), "-I", row.key_id, "-n", user, "-z", str(row.serial),
                 "-V", keygen_validity(valid_after, valid_before), *options, str(public)],
                doing="sign the login certificate", timeout=SIGN_TIMEOUT_SECONDS,
            )  # fmt: skip
            certificate = (Path(folder) / "key-cert.pub").read_text().strip()
        return SignedLoginCertificate(
            certificate=certificate, serial=row.serial, key_id=row.key_id,
            key_fingerprint=fingerprint, valid_before=row.valid_before, ttl_seconds=ttl_seconds,
            source_address=source_address,
        )  # fmt: skip
