"""Login certificates for people: MFA once per working day with the stock OpenSSH client.

``ssh alice@gw pamgate-login < ~/.ssh/id_ed25519.pub > ~/.ssh/id_ed25519-cert.pub``,
after alice signed in with both factors, gets her a certificate from the
login CA (:mod:`gateway.crypto.login_ca`) for that key: principal ``alice``,
valid for ``[auth] login_certificate_ttl`` (8 h; at most
``login_certificate_max_ttl``), optionally bound to her address. Until it
expires, the human lane takes it as both factors (the sign-in, with method
``login-cert``, is :mod:`gateway.domain.sign_in`'s), unless a rule asks for a
fresh code (``fresh_mfa``).

:meth:`LoginCertificates.check` judges a presented certificate: the checks
both lanes share (:mod:`gateway.domain.certificate_checks`: signed by the
login CA only, no SHA-1 or DSA, options as sshd reads them, inside its
validity window with no end skew, the user among its principals), then a
lifetime no longer than the maximum (from its start and from now), its
``source-address``, and its record: a certificate the gateway issued, to this
user, for this key, and not revoked.

Every certificate is recorded (``issued_certificates``, ``ca = 'login'``) and
audited (``login_cert.issued``: serial, key fingerprint, TTL, source binding).
Disabling the user, resetting their MFA, setting their password,
``pamgate user logout NAME`` and
``ssh alice@gw pamgate-logout`` revoke all of a user's outstanding
certificates (:func:`revoke_user_certificates`, inside the caller's
transaction where one is open): the next login with one is refused, and the
lanes' watch ends live sessions signed in with one within about 2 s
(:meth:`LoginCertificates.revoked_among`).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gateway.config import AuthSettings, duration_seconds
from gateway.crypto.algorithms import HUMAN_LANE_KEYS
from gateway.crypto.certificates import PresentedCertificate
from gateway.crypto.keys import parse_public_key_line
from gateway.crypto.login_ca import LOGIN_CA, LoginCA, SignedLoginCertificate
from gateway.crypto.machine_ca import BACKDATE_SECONDS, issued_certificate
from gateway.domain.audit.trail import ActorType, AuditEvent, AuditLog, AuditRecord, Trail
from gateway.domain.certificate_checks import (
    CertificateRefused,
    TrustedCA,
    check_source_address,
    check_user_certificate,
    client_address,
)
from gateway.errors import IdentityError, PamgateError
from gateway.store.database import Store
from gateway.store.models import IssuedCertificate

#: The sign-in method a login certificate stands for (``auth.success`` ``method``).
LOGIN_CERT_METHOD = "login-cert"
#: Why certificates are revoked, as ``login_cert.revoked`` events say it.
REVOKED_LOGOUT = "logout"
REVOKED_DISABLED = "user disabled"
REVOKED_MFA_RESET = "MFA reset"
REVOKED_PASSWORD_SET = "password changed"


class LoginCertificateError(PamgateError):
    """A login certificate cannot be issued as asked; the message says why."""


@dataclass(frozen=True)
class CertificateLogin:
    """A login certificate that passed :meth:`LoginCertificates.check`."""

    user: str
    serial: int
    key_fingerprint: str
    valid_before: datetime
    #: When the sign-in with both factors behind the certificate happened.
    mfa_at: datetime | None
    source_address: str | None


@dataclass(frozen=True)
class OutstandingLoginCertificate:
    """A login certificate that is neither expired nor revoked."""

    user: str
    serial: int
    key_fingerprint: str
    issued_at: datetime
    valid_before: datetime
    source_address: str | None


class LoginCertificates:
    """Issues, checks and revokes people's login certificates (see the module docstring)."""

    def __init__(
        self, store: Store, audit: AuditLog, ca: LoginCA, settings: AuthSettings, *,
        clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self._store = store
        self._audit = audit
        self._ca = ca
        self._settings = settings
        self._clock = clock

    def ca_key_data(self) -> str:
        """The login CA's public key, ``TYPE BASE64`` (CertificateAuthorityError if missing)."""
        return self._ca.public_key_data()

    def ca_key_line(self) -> str:
        """The login CA's public key, one OpenSSH line (``pamgate ca show login``)."""
        return self._ca.public_key_line()

    @property
    def default_ttl_seconds(self) -> int:
        return duration_seconds(self._settings.login_certificate_ttl)

    @property
    def max_ttl_seconds(self) -> int:
        return duration_seconds(self._settings.login_certificate_max_ttl)

    def issue(
        self, user: str, public_key_line: str, *, ttl_seconds: int | None, source: str,
        bind_source: bool, mfa_at: datetime, method: str, session_id: str | None = None,
    ) -> SignedLoginCertificate:  # fmt: skip
        """Sign a login certificate for ``user``'s key, recorded and audited in one transaction.

        ``mfa_at`` and ``method`` describe the sign-in with both factors that
        asks for it (``password+totp``...); the caller makes sure it was one.
        LoginCertificateError if the key or the TTL is not acceptable.
        """
        try:
            key_data, fingerprint, _ = parse_public_key_line(public_key_line)
        except IdentityError as exc:
            raise LoginCertificateError(f"not a public key: {exc}") from None
        refused = HUMAN_LANE_KEYS.public_key_refusal(_blob(key_data))
        if refused:
            raise LoginCertificateError(refused)
        ttl = self.default_ttl_seconds if ttl_seconds is None else ttl_seconds
        if not 60 <= ttl <= self.max_ttl_seconds:
            raise LoginCertificateError(
                f"--ttl must be between 1 min and {self.max_ttl_seconds // 60} min "
                "([auth] login_certificate_max_ttl)"
            )
        bound = bind_source or self._settings.login_certificate_bind_source
        address = client_address(source)
        if bound and address is None:
            raise LoginCertificateError(f"cannot bind the certificate to source {source!r}")
        source_address = str(address) if bound and address is not None else None
        with self._store.transaction() as db:
            signed = self._ca.sign(
                db, user, public_key_line, ttl, source_address=source_address, mfa_at=mfa_at
            )
            record = self._audit.append(db, Trail.HUMAN, AuditEvent(
                actor=user, actor_type=ActorType.HUMAN, action="login_cert.issued",
                outcome="success", target=f"user:{user}", source=source, session_id=session_id,
                authority=f"sign-in:{method}",
                details={
                    "serial": signed.serial, "key": fingerprint, "ttl_seconds": ttl,
                    "valid_before": signed.valid_before.isoformat(),
                    "source_address": source_address, "mfa_at": mfa_at.isoformat(),
                },
            ))  # fmt: skip
        self._audit.committed(record)
        return signed

    def check(
        self, user: str, cert: PresentedCertificate, *, source: str
    ) -> CertificateLogin:
        """Accept ``cert`` for ``user`` from ``source`` (see the module docstring), or raise
        CertificateRefused naming the first rule it breaks."""
        now = self._clock()
        trusted = TrustedCA(self._ca.public_key_data(), "login CA", HUMAN_LANE_KEYS)
        options = check_user_certificate(cert, trusted, principal=user, now=now)
        limit = self.max_ttl_seconds
        if cert.lifetime_seconds > limit + BACKDATE_SECONDS or cert.valid_before - now > limit:
            raise CertificateRefused(
                f"the certificate is valid for longer than the login certificates' maximum "
                f"of {limit} s"
            )
        check_source_address(options, source)
        with self._store.transaction(write=False) as db:
            row = issued_certificate(db, cert.serial)
            if row is None or row.ca != LOGIN_CA or row.principal != user:
                raise CertificateRefused(
                    f"the login CA never issued serial {cert.serial} to {user}"
                )
            if row.key_fingerprint != cert.key_fingerprint:
                raise CertificateRefused(
                    f"login certificate serial {cert.serial} was issued for another key"
                )
            if row.revoked_at is not None:
                raise CertificateRefused(
                    f"login certificate serial {cert.serial} was revoked ({row.revoked_reason})"
                )
            return CertificateLogin(
                user=user, serial=row.serial, key_fingerprint=cert.key_fingerprint,
                valid_before=row.valid_before, mfa_at=row.mfa_at,
                source_address=row.source_address,
            )  # fmt: skip

    def new_channel_refused_because(self, login: CertificateLogin) -> str | None:
        """Why a connection signed in with ``login`` may not open another channel (a
        multiplexed ``ControlMaster`` command, a forward), or None.

        Stricter than for live sessions, which end on revocation only: the
        certificate must also still be valid, as a fresh login would need.
        """
        revoked = self.revoked_among([login.serial])
        if revoked:
            return (
                f"the login certificate this connection signed in with was revoked "
                f"({revoked[login.serial]})"
            )
        if self._clock() >= login.valid_before.timestamp():
            return "the login certificate this connection signed in with has expired"
        return None

    def revoked_among(self, serials: Collection[int]) -> dict[int, str]:
        """Serial -> why, for the revoked ones among ``serials`` (one query: the lanes' watch
        reads every live session's certificate each second)."""
        if not serials:
            return {}
        query = select(IssuedCertificate.serial, IssuedCertificate.revoked_reason).where(
            IssuedCertificate.serial.in_(list(serials)),
            IssuedCertificate.ca == LOGIN_CA,
            IssuedCertificate.revoked_at.is_not(None),
        )
        with self._store.transaction(write=False) as db:
            return {serial: reason or "revoked" for serial, reason in db.execute(query)}

    def outstanding(self, user: str | None = None) -> list[OutstandingLoginCertificate]:
        """Login certificates neither expired nor revoked (of one user, or all), newest first."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        query = select(IssuedCertificate).where(
            IssuedCertificate.ca == LOGIN_CA,
            IssuedCertificate.revoked_at.is_(None),
            IssuedCertificate.valid_before > now,
        )
        if user is not None:
            query = query.where(IssuedCertificate.principal == user)
        with self._store.transaction(write=False) as db:
            return [
                OutstandingLoginCertificate(
                    user=row.principal, serial=row.serial,
                    key_fingerprint=row.key_fingerprint or "", issued_at=row.issued_at,
                    valid_before=row.valid_before,
                    source_address=row.source_address,
                )  # fmt: skip
                for row in db.scalars(query.order_by(IssuedCertificate.serial.desc()))
            ]

    def log_out(
        self, user: str, *, actor: str, actor_type: ActorType, authority: str, source: str | None,
        session_id: str | None = None,
    ) -> list[int]:  # fmt: skip
        """Revoke ``user``'s outstanding login certificates (``logout``, audited even when
        there are none); the serials revoked."""
        with self._store.transaction() as db:
            serials, records = revoke_user_certificates(
                db, self._audit, user, reason=REVOKED_LOGOUT, actor=actor, actor_type=actor_type,
                authority=authority, source=source, at=datetime.fromtimestamp(self._clock(), UTC),
                session_id=session_id, always=True,
            )  # fmt: skip
        for record in records:
            self._audit.committed(record)
        return serials


def revoke_user_certificates(
    db: Session, audit: AuditLog, user: str, *, reason: str, actor: str, actor_type: ActorType,
    authority: str, source: str | None, at: datetime, session_id: str | None = None,
    always: bool = False,
) -> tuple[list[int], list[AuditRecord]]:  # fmt: skip
    """Revoke every unrevoked login certificate of ``user`` inside the caller's transaction
    ``db``, with one ``login_cert.revoked`` event (none when there were none, unless
    ``always``); the serials and the records, for :meth:`AuditLog.committed` after the commit.

    Expired certificates are revoked too: the record then says exactly what was outstanding
    when it happened, and a clock set back cannot revive one.
    """
    serials = list(db.scalars(
        select(IssuedCertificate.serial).where(
            IssuedCertificate.ca == LOGIN_CA, IssuedCertificate.principal == user,
            IssuedCertificate.revoked_at.is_(None),
        ).order_by(IssuedCertificate.serial)
    ))  # fmt: skip
    if not serials and not always:
        return [], []
    if serials:
        db.execute(
            update(IssuedCertificate)
            .where(IssuedCertificate.serial.in_(serials))
            .values(revoked_at=at, revoked_reason=reason[:255])
        )
    record = audit.append(db, Trail.HUMAN, AuditEvent(
        actor=actor, actor_type=actor_type, action="login_cert.revoked", outcome="success",
        target=f"user:{user}", source=source, reason=reason, authority=authority,
        session_id=session_id, details={"serials": serials, "count": len(serials)},
    ))  # fmt: skip
    return serials, [record]


def _blob(key_data: str) -> bytes:
    """The SSH wire form of a ``TYPE BASE64`` key (already checked to be valid base64)."""
    return base64.b64decode(key_data.split()[1])
