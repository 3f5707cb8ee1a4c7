"""The life of machine credentials: issue, join tokens and renewal (revocation is
:mod:`gateway.domain.machines.revocation`).

Every certificate pamgate signs for an NHI belongs to a *lineage*: it starts
with an administrator's ``machine issue`` or a workload's join with a token,
and continues with each renewal. Each renewal increments the lineage's
generation. Presenting an older generation after a renewal means the
credential was copied: the NHI is locked (suspended), an alert goes out,
and the machine trail says so; that happens only once the presenter has
proved it holds the key (:meth:`MachineCredentials.lock_copied_credential`),
so a leaked *public* certificate cannot be used to lock an NHI out.

Join tokens are shown once (``pgjoin-ID-SECRET``); only a sha256 of the
secret is stored.

Plain Python over the store; no sockets. Everything is audited in the
**machine** trail, in the same transaction as the change it records.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from gateway.crypto.algorithms import MACHINE_LANE_KEYS
from gateway.crypto.certificates import PresentedCertificate
from gateway.crypto.keys import parse_public_key_line
from gateway.crypto.machine_ca import (
    BACKDATE_SECONDS,
    DEFAULT_CERTIFICATE_TTL,
    MachineCA,
    SignedCertificate,
    issued_certificate,
)
from gateway.domain.alerts import WebhookAlerts
from gateway.domain.audit.trail import (
    ActorType,
    AuditEvent,
    AuditLog,
    AuditRecord,
    Trail,
    admin_authority,
)
from gateway.domain.machines.registry import (
    MachineError,
    MachineView,
    load_machine,
    machine_view,
)
from gateway.domain.machines.revocation import revocation_of
from gateway.errors import PamgateError
from gateway.store.database import Store
from gateway.store.models import IssuedCertificate, MachineJoinToken, MachineLineage

TOKEN_PREFIX = "pgjoin"
DEFAULT_TOKEN_TTL = 600
MAX_TOKEN_TTL = 7 * 24 * 3600
MAX_TOKEN_USES = 1000


class JoinRefused(MachineError):
    """A join token was not accepted (unknown, wrong, expired, used up, or its NHI inactive)."""


class RenewalRefused(MachineError):
    """A certificate cannot be renewed as asked."""


@dataclass(frozen=True)
class CertificateLineage:
    """Where a presented certificate sits in its lineage."""

    lineage_id: int
    #: The certificate's generation, and the newest one of its lineage.
    generation: int
    current_generation: int

    @property
    def superseded(self) -> bool:
        """True once a renewal has replaced this certificate."""
        return self.generation < self.current_generation


class MachineCredentials:
    """Issues, renews and revokes machine certificates; redeems join tokens."""

    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        ca: MachineCA,
        alerts: WebhookAlerts,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._audit = audit
        self._ca = ca
        self._alerts = alerts
        self._clock = clock

    # -- issuing ------------------------------------------------------------

    def issue(
        self, name: str, public_key_line: str, ttl_seconds: int, *, actor: str
    ) -> SignedCertificate:
        """An administrator signs a key for ``name``: the first of a new lineage."""
        with self._store.transaction() as db:
            nhi = machine_view(load_machine(db, name))
            lineage = self._new_lineage(db, nhi.name, "issue")
            signed = self._sign(db, nhi, public_key_line, ttl_seconds, lineage, generation=1)
            record = self._append(db, AuditEvent(
                actor=actor, actor_type=ActorType.ADMIN, action="machine.certificate_issued",
                target=f"nhi:{nhi.name}", authority=admin_authority(actor),
                details=_issue_details(signed, nhi, lineage),
            ))  # fmt: skip
        self._audit.committed(record)
        return signed

    # -- join tokens ----------------------------------------------------------

    def create_join_token(self, name: str, *, ttl_seconds: int, uses: int, actor: str) -> str:
        """A token a workload can trade, with its public key, for a first certificate."""
        if not 60 <= ttl_seconds <= MAX_TOKEN_TTL:
            raise MachineError("--ttl must be between 1m and 7d")
        if not 1 <= uses <= MAX_TOKEN_USES:
            raise MachineError(f"--uses must be between 1 and {MAX_TOKEN_USES}")
        secret = secrets.token_urlsafe(32)
        now = self._now()
        with self._store.transaction() as db:
            nhi = load_machine(db, name)
            if nhi.status != "active":
                raise MachineError(f"{name!r} is {nhi.status}: no join tokens")
            row = MachineJoinToken(
                nhi=name, secret_sha256=_sha256(secret), uses_left=uses,
                expires_at=now + timedelta(seconds=ttl_seconds), created_by=actor, created_at=now,
            )  # fmt: skip
            db.add(row)
            db.flush()
            record = self._append(db, AuditEvent(
                actor=actor, actor_type=ActorType.ADMIN, action="machine.token_created",
                target=f"nhi:{name}", authority=admin_authority(actor),
                details={"token_id": row.id, "uses": uses,
                         "expires_at": row.expires_at.isoformat()},
            ))  # fmt: skip
        self._audit.committed(record)
        return f"{TOKEN_PREFIX}-{row.id}-{secret}"

    def join(
        self, token: str, public_key_line: str, *, ttl_seconds: int | None, source: str
    ) -> tuple[MachineView, SignedCertificate]:
        """Redeem a join token for a certificate on ``public_key_line`` (a new lineage).

        A refused join is audited and raises JoinRefused with a reason the
        workload may see; the token's secret is never recorded.
        """
        token_id, secret = _split_token(token)
        try:
            with self._store.transaction() as db:
                row = db.get(MachineJoinToken, token_id, with_for_update=True) if token_id else None
                if row is None or not hmac.compare_digest(row.secret_sha256, _sha256(secret)):
                    raise JoinRefused("the join token is not valid")
                if row.uses_left <= 0:
                    raise JoinRefused("the join token has been used up")
                if row.expires_at <= self._now():
                    raise JoinRefused("the join token has expired")
                identity = load_machine(db, row.nhi, for_update=True)
                nhi = machine_view(identity)
                if nhi.status != "active":
                    raise JoinRefused(f"{nhi.name} is {nhi.status}")
                ttl = ttl_seconds or min(DEFAULT_CERTIFICATE_TTL, nhi.max_ttl_seconds)
                identity.last_used_at = self._now()
                row.uses_left -= 1
                lineage = self._new_lineage(db, nhi.name, "join")
                signed = self._sign(db, nhi, public_key_line, ttl, lineage, generation=1)
                record = self._append(db, AuditEvent(
                    actor=nhi.name, actor_type=ActorType.MACHINE, action="machine.joined",
                    target=f"nhi:{nhi.name}", source=source, authority=nhi.scope_id,
                    details={**_issue_details(signed, nhi, lineage), "token_id": row.id,
                             "token_uses_left": row.uses_left},
                ))  # fmt: skip
        except PamgateError as exc:  # bad key, CA trouble: refused and audited all the same
            self._audit.record(Trail.MACHINE, AuditEvent(
                actor=f"token:{token_id}" if token_id else "unknown",
                actor_type=ActorType.MACHINE, action="machine.join_refused", outcome="refused",
                source=source, reason=str(exc), details={"token_id": token_id},
            ))  # fmt: skip
            if isinstance(exc, JoinRefused):
                raise
            raise JoinRefused(str(exc)) from None
        self._audit.committed(record)
        return nhi, signed

    # -- renewal and generations ------------------------------------------------

    def lineage_of(self, certificate: PresentedCertificate) -> CertificateLineage | None:
        """The certificate's place in its lineage; None for one signed outside pamgate."""
        with self._store.transaction(write=False) as db:
            row = _issued_row(db, certificate)
            if row is None or row.lineage_id is None or row.generation is None:
                return None
            lineage = db.get(MachineLineage, row.lineage_id)
            if lineage is None:
                return None
            return CertificateLineage(row.lineage_id, row.generation, lineage.generation)

    def lock_copied_credential(
        self, nhi: str, certificate: PresentedCertificate, lineage: CertificateLineage, *,
        source: str,
    ) -> str:  # fmt: skip
        """Lock ``nhi`` (suspend it), audit and alert: a superseded certificate was used.

        Call only once the presenter has proved it holds the key. Returns the reason.
        """
        reason = (
            f"certificate generation {lineage.generation} of lineage {lineage.lineage_id} was "
            f"used after renewal to generation {lineage.current_generation}: the credential "
            "was copied"
        )
        with self._store.transaction() as db:
            row = load_machine(db, nhi, for_update=True)
            locked = row.status == "active"
            if locked:
                row.status, row.updated_at = "suspended", self._now()
                row.status_reason = f"locked: {reason}"
            record = self._append(db, AuditEvent(
                actor=nhi, actor_type=ActorType.MACHINE, action="machine.generation_mismatch",
                outcome="refused", target=f"nhi:{nhi}", source=source, reason=reason,
                authority=f"nhi:{nhi}",
                details={"serial": certificate.serial, "key_id": certificate.key_id,
                         "lineage": lineage.lineage_id, "presented_generation": lineage.generation,
                         "current_generation": lineage.current_generation, "locked": locked},
            ))  # fmt: skip
        self._audit.committed(record)
        self._alerts.send(
            "machine.copied_credential",
            {"nhi": nhi, "source": source, "serial": certificate.serial, "reason": reason},
            authority=f"nhi:{nhi}",
            trail=Trail.MACHINE,
        )
        return f"{nhi} is locked: {reason}"

    def renew(
        self,
        nhi_name: str,
        certificate: PresentedCertificate,
        public_key_line: str,
        *,
        ttl_seconds: int | None,
        source: str,
    ) -> SignedCertificate:
        """Sign a new key for the holder of a valid certificate: the lineage's next generation."""
        new_key, _, _ = parse_public_key_line(public_key_line)
        if new_key == certificate.key:
            raise RenewalRefused("renewal needs a new key: generate one with ssh-keygen")
        with self._store.transaction() as db:
            issued = _issued_row(db, certificate)
            if issued is None or issued.lineage_id is None or issued.generation is None:
                raise RenewalRefused(
                    "this certificate was not issued by pamgate, so it cannot be renewed; "
                    "ask an administrator for a join token"
                )
            lineage = db.get(MachineLineage, issued.lineage_id, with_for_update=True)
            if lineage is None or issued.generation != lineage.generation:
                raise RenewalRefused("only the newest certificate of a lineage can be renewed")
            revoked = revocation_of(db, certificate)
            if revoked:
                raise RenewalRefused(revoked)
            if self._clock() >= certificate.valid_before:
                raise RenewalRefused("the certificate has expired")
            nhi = machine_view(load_machine(db, nhi_name, for_update=True))
            presented_ttl = max(60, certificate.lifetime_seconds - BACKDATE_SECONDS)
            ttl = ttl_seconds or min(nhi.max_ttl_seconds, presented_ttl)
            lineage.generation += 1
            lineage.updated_at = self._now()
            signed = self._sign(
                db, nhi, public_key_line, ttl, lineage, generation=lineage.generation
            )
            record = self._append(db, AuditEvent(
                actor=nhi.name, actor_type=ActorType.MACHINE, action="machine.renewed",
                target=f"nhi:{nhi.name}", source=source, authority=nhi.scope_id,
                details={**_issue_details(signed, nhi, lineage),
                         "previous_serial": certificate.serial},
            ))  # fmt: skip
        self._audit.committed(record)
        return signed

    # -- revocation ------------------------------------------------------------

    def record_login(
        self,
        nhi: MachineView,
        certificate: PresentedCertificate,
        *,
        source: str,
        lineage: CertificateLineage | None,
    ) -> None:
        """Audit an accepted login and note the NHI's last use (one transaction)."""
        with self._store.transaction() as db:
            row = load_machine(db, nhi.name)
            row.last_used_at = self._now()
            record = self._append(db, AuditEvent(
                actor=nhi.name, actor_type=ActorType.MACHINE, action="auth.accepted",
                source=source, authority=nhi.scope_id,
                details={"method": "publickey-certificate", "serial": certificate.serial,
                         "key_id": certificate.key_id, "key": certificate.key_fingerprint,
                         "valid_before": certificate.valid_before,
                         "lineage": lineage.lineage_id if lineage else None,
                         "generation": lineage.generation if lineage else None},
            ))  # fmt: skip
        self._audit.committed(record)

    # -- internals -------------------------------------------------------------

    def _sign(
        self,
        db: Session,
        nhi: MachineView,
        public_key_line: str,
        ttl_seconds: int,
        lineage: MachineLineage,
        *,
        generation: int,
    ) -> SignedCertificate:
        """Sign for ``nhi`` if it may have a certificate that long; MachineError if not."""
        if nhi.status != "active":
            raise MachineError(f"{nhi.name!r} is {nhi.status}: no certificates")
        if not 60 <= ttl_seconds <= nhi.max_ttl_seconds:
            raise MachineError(
                f"--ttl must be between 1m and {nhi.name}'s maximum of {nhi.max_ttl_seconds // 60}m"
            )
        # No certificate the machine lane would refuse to take back (DSA, RSA under 1024 bits).
        key_data, _, _ = parse_public_key_line(public_key_line)
        refused = MACHINE_LANE_KEYS.public_key_refusal(base64.b64decode(key_data.split()[1]))
        if refused:
            raise MachineError(f"{refused} on the machine lane: use an ed25519, ECDSA or RSA key")
        return self._ca.sign(
            db, nhi.certificate_scope(), public_key_line, ttl_seconds, lineage_id=lineage.id,
            generation=generation,
        )  # fmt: skip

    def _new_lineage(self, db: Session, nhi: str, origin: str) -> MachineLineage:
        now = self._now()
        lineage = MachineLineage(
            nhi=nhi, generation=1, origin=origin, created_at=now, updated_at=now
        )
        db.add(lineage)
        db.flush()
        return lineage

    def _append(self, db: Session, event: AuditEvent) -> AuditRecord:
        return self._audit.append(db, Trail.MACHINE, event)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)


def _issued_row(db: Session, certificate: PresentedCertificate) -> IssuedCertificate | None:
    row = issued_certificate(db, certificate.serial)
    if row is None or row.ca != "machine" or row.key_id != certificate.key_id:
        return None
    return row


def _issue_details(
    signed: SignedCertificate, nhi: MachineView, lineage: MachineLineage
) -> dict[str, object]:
    return {"serial": signed.serial, "key_id": signed.key_id, "key": signed.key_fingerprint,
            "ttl_seconds": signed.ttl_seconds, "scope": nhi.scope_id, "lineage": lineage.id,
            "generation": lineage.generation}  # fmt: skip


def _split_token(token: str) -> tuple[int | None, str]:
    prefix, _, rest = token.strip().partition("-")
    number, _, secret = rest.partition("-")
    if prefix != TOKEN_PREFIX or not number.isdigit() or len(number) > 12 or not secret:
        return None, ""
    return int(number), secret


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
