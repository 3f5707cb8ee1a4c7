"""The life of machine credentials: issue, join tokens, renewal, revocation.

Every certificate pamgate signs for an NHI belongs to a *lineage*: it starts
with an administrator's ``machine issue`` or a workload's join with a token,
and continues with each renewal. Each renewal increments the lineage's
generation. Presenting an older generation after a renewal means the
credential was copied: the NHI is locked (suspended), an alert goes out,
and the machine trail says so.

Join tokens are shown once (``pgjoin-ID-SECRET``); only a sha256 of the
secret is stored. Revocations (serial, key id or key) are checked at every
authentication and by live sessions each second, and can be written as an
OpenSSH KRL for targets' sshds.

Plain Python over the store; no sockets. Everything is audited in the
**machine** trail, in the same transaction as the change it records.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.alerts import WebhookAlerts
from gateway.audit import ActorType, AuditEvent, AuditLog, AuditRecord, Trail, admin_authority
from gateway.identities import parse_public_key_line
from gateway.machine_ca import BACKDATE_SECONDS, MachineCA, SignedCertificate
from gateway.machines import (
    MachineError,
    MachineRegistry,
    MachineView,
    load_machine,
    machine_view,
)
from gateway.models import (
    IssuedCertificate,
    MachineJoinToken,
    MachineLineage,
    MachineRevocation,
)
from gateway.ssh_certificates import PresentedCertificate
from gateway.store import Store

TOKEN_PREFIX = "pgjoin"
DEFAULT_TOKEN_TTL = 600
MAX_TOKEN_TTL = 7 * 24 * 3600
MAX_TOKEN_USES = 1000
REVOCATION_KINDS = ("serial", "key_id", "key")


class JoinRefused(MachineError):
    """A join token was not accepted (unknown, wrong, expired, used up, or its NHI inactive)."""


class RenewalRefused(MachineError):
    """A certificate cannot be renewed as asked."""


class CopiedCredential(MachineError):
    """An older certificate generation was used after a renewal; the NHI is now locked."""


@dataclass(frozen=True)
class CertificateLineage:
    """Where a presented certificate sits in its lineage."""

    lineage_id: int
    generation: int


@dataclass(frozen=True)
class OutstandingCertificate:
    """A machine certificate that has not expired and is not revoked."""

    serial: int
    nhi: str
    key_id: str
    key_fingerprint: str | None
    valid_before: datetime


@dataclass(frozen=True)
class Revocation:
    """One revoked serial, key id or key."""

    kind: str
    value: str
    nhi: str | None
    reason: str
    revoked_by: str
    revoked_at: datetime

    def spec_line(self) -> str:
        """The line for ``ssh-keygen -k``."""
        return {"serial": "serial", "key_id": "id", "key": "key"}[self.kind] + f": {self.value}"


class MachineCredentials:
    """Issues, renews and revokes machine certificates; redeems join tokens."""

    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        registry: MachineRegistry,
        ca: MachineCA,
        alerts: WebhookAlerts,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._audit = audit
        self._registry = registry
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
            signed = self._ca.sign(
                db, nhi, public_key_line, ttl_seconds, lineage_id=lineage.id, generation=1
            )
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
                nhi = machine_view(load_machine(db, row.nhi))
                if nhi.status != "active":
                    raise JoinRefused(f"{nhi.name} is {nhi.status}")
                ttl = ttl_seconds or nhi.max_ttl_seconds
                row.uses_left -= 1
                lineage = self._new_lineage(db, nhi.name, "join")
                signed = self._ca.sign(
                    db, nhi, public_key_line, ttl, lineage_id=lineage.id, generation=1
                )
                record = self._append(db, AuditEvent(
                    actor=nhi.name, actor_type=ActorType.MACHINE, action="machine.joined",
                    target=f"nhi:{nhi.name}", source=source, authority=nhi.scope_id,
                    details={**_issue_details(signed, nhi, lineage), "token_id": row.id,
                             "token_uses_left": row.uses_left},
                ))  # fmt: skip
        except MachineError as exc:
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
        """The lineage of a certificate pamgate issued; None for one signed elsewhere."""
        with self._store.transaction(write=False) as db:
            row = _issued_row(db, certificate)
            if row is None or row.lineage_id is None or row.generation is None:
                return None
            return CertificateLineage(row.lineage_id, row.generation)

    def check_generation(
        self, nhi: str, certificate: PresentedCertificate, *, source: str
    ) -> CertificateLineage | None:
        """The certificate's lineage, if pamgate issued it.

        Raises CopiedCredential, after locking ``nhi`` and alerting, if a newer
        generation of the lineage exists.
        """
        presented = self.lineage_of(certificate)
        if presented is None:
            return None
        with self._store.transaction(write=False) as db:
            lineage = db.get(MachineLineage, presented.lineage_id)
            if lineage is None or presented.generation >= lineage.generation:
                return presented
        with self._store.transaction() as db:
            lineage = db.get(MachineLineage, presented.lineage_id, with_for_update=True)
            assert lineage is not None
            row = load_machine(db, nhi, for_update=True)
            reason = (
                f"certificate generation {presented.generation} of lineage {lineage.id} was used "
                f"after renewal to generation {lineage.generation}: the credential was copied"
            )
            locked = row.status == "active"
            if locked:
                row.status, row.updated_at = "suspended", self._now()
            record = self._append(db, AuditEvent(
                actor=nhi, actor_type=ActorType.MACHINE, action="machine.generation_mismatch",
                outcome="refused", target=f"nhi:{nhi}", source=source, reason=reason,
                authority=f"nhi:{nhi}",
                details={"serial": certificate.serial, "key_id": certificate.key_id,
                         "lineage": lineage.id, "presented_generation": presented.generation,
                         "current_generation": lineage.generation, "locked": locked},
            ))  # fmt: skip
        self._audit.committed(record)
        self._alerts.send(
            "machine.copied_credential",
            {"nhi": nhi, "source": source, "serial": certificate.serial, "reason": reason},
            authority=f"nhi:{nhi}",
            trail=Trail.MACHINE,
        )
        raise CopiedCredential(f"{nhi} is locked: {reason}")

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
            nhi = machine_view(load_machine(db, nhi_name))
            presented_ttl = max(60, certificate.lifetime_seconds - BACKDATE_SECONDS)
            ttl = ttl_seconds or min(nhi.max_ttl_seconds, presented_ttl)
            lineage.generation += 1
            lineage.updated_at = self._now()
            signed = self._ca.sign(
                db, nhi, public_key_line, ttl, lineage_id=lineage.id,
                generation=lineage.generation,
            )  # fmt: skip
            record = self._append(db, AuditEvent(
                actor=nhi.name, actor_type=ActorType.MACHINE, action="machine.renewed",
                target=f"nhi:{nhi.name}", source=source, authority=nhi.scope_id,
                details={**_issue_details(signed, nhi, lineage),
                         "previous_serial": certificate.serial},
            ))  # fmt: skip
        self._audit.committed(record)
        return signed

    # -- revocation ------------------------------------------------------------

    def revoke(
        self,
        *,
        actor: str,
        reason: str = "",
        name: str | None = None,
        serial: int | None = None,
        key_id: str | None = None,
        key_line: str | None = None,
    ) -> list[Revocation]:
        """Revoke one thing: all of ``name``'s outstanding certificates, a serial, a key id or
        a key. Returns the new revocations (empty if everything was revoked already)."""
        if sum(value is not None for value in (name, serial, key_id, key_line)) != 1:
            raise MachineError("revoke exactly one of: NAME, --serial, --key-id, --key")
        if serial is not None and serial < 0:
            raise MachineError("--serial must be a non-negative number")
        if key_id is not None and not key_id.strip():
            raise MachineError("--key-id must not be empty")
        now = self._now()
        with self._store.transaction() as db:
            entries: list[tuple[str, str, str | None, str | None]] = []
            if name is not None:
                load_machine(db, name)
                entries += [("serial", str(cert.serial), None, name)
                            for cert in self._outstanding(db, name)]  # fmt: skip
            elif serial is not None:
                issued = db.get(IssuedCertificate, serial)
                owner = issued.principal if issued is not None and issued.ca == "machine" else None
                entries.append(("serial", str(serial), None, owner))
            elif key_id is not None:
                entries.append(("key_id", key_id.strip(), None, None))
            else:
                assert key_line is not None
                key_data, fingerprint, _ = parse_public_key_line(key_line)
                entries.append(("key", key_data, fingerprint, None))
            added = []
            for kind, value, fingerprint, nhi in entries:
                exists = db.scalar(select(MachineRevocation.id).where(
                    MachineRevocation.kind == kind, MachineRevocation.value == value))  # fmt: skip
                if exists is not None:
                    continue
                row = MachineRevocation(
                    kind=kind, value=value, fingerprint=fingerprint, nhi=nhi, reason=reason,
                    revoked_by=actor, revoked_at=now,
                )  # fmt: skip
                db.add(row)
                added.append(_revocation(row))
            if not added:
                return []
            record = self._append(db, AuditEvent(
                actor=actor, actor_type=ActorType.ADMIN, action="machine.revoked",
                target=f"nhi:{name}" if name else "certificate", reason=reason,
                authority=admin_authority(actor),
                details={"revoked": [{"kind": r.kind, "value": r.value} for r in added]},
            ))  # fmt: skip
            try:
                db.flush()
            except IntegrityError:  # revoked by someone else a moment ago
                raise MachineError("that was revoked concurrently; run the command again") from None
        self._audit.committed(record)
        return added

    def offboard(self, name: str, *, actor: str, reason: str = "") -> list[Revocation]:
        """Offboard ``name`` for good and revoke everything it holds.

        The status changes first: from then on no login, join or renewal
        succeeds, even if the revocations below were interrupted.
        """
        self._registry.set_status(name, "offboarded", actor=actor, reason=reason)
        with self._store.transaction() as db:
            for token in db.scalars(
                select(MachineJoinToken).where(
                    MachineJoinToken.nhi == name, MachineJoinToken.uses_left > 0
                )
            ):
                token.uses_left = 0
        return self.revoke(actor=actor, reason=reason or "offboarded", name=name)

    def revocation_reason(self, certificate: PresentedCertificate) -> str | None:
        """Why ``certificate`` is revoked, or None if it is not."""
        with self._store.transaction(write=False) as db:
            row = db.scalars(select(MachineRevocation).where(or_(
                (MachineRevocation.kind == "serial")
                & (MachineRevocation.value == str(certificate.serial)),
                (MachineRevocation.kind == "key_id")
                & (MachineRevocation.value == certificate.key_id),
                (MachineRevocation.kind == "key")
                & (MachineRevocation.fingerprint == certificate.key_fingerprint),
            ))).first()  # fmt: skip
            if row is None:
                return None
            label = {"serial": f"serial {row.value}", "key_id": f"key id {row.value!r}",
                     "key": f"key {row.fingerprint}"}[row.kind]  # fmt: skip
            return f"certificate revoked ({label})"

    def revocations(self) -> list[Revocation]:
        with self._store.transaction(write=False) as db:
            rows = db.scalars(select(MachineRevocation).order_by(MachineRevocation.id))
            return [_revocation(row) for row in rows]

    def write_krl(self, path: Path) -> int:
        """Write every revocation as an OpenSSH KRL; returns how many entries it holds."""
        entries = self.revocations()
        self._ca.write_krl([entry.spec_line() for entry in entries], path)
        return len(entries)

    # -- state -------------------------------------------------------------------

    def outstanding(self, name: str | None = None) -> list[OutstandingCertificate]:
        """Certificates that have not expired and are not revoked, oldest first."""
        with self._store.transaction(write=False) as db:
            return self._outstanding(db, name)

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

    def _outstanding(self, db: Session, name: str | None) -> list[OutstandingCertificate]:
        revoked_serials = select(MachineRevocation.value).where(MachineRevocation.kind == "serial")
        revoked_ids = select(MachineRevocation.value).where(MachineRevocation.kind == "key_id")
        query = select(IssuedCertificate).where(
            IssuedCertificate.ca == "machine",
            IssuedCertificate.valid_before > self._now(),
            IssuedCertificate.key_id.not_in(revoked_ids),
        )
        if name is not None:
            query = query.where(IssuedCertificate.principal == name)
        revoked = set(db.scalars(revoked_serials))
        return [
            OutstandingCertificate(row.serial, row.principal, row.key_id, row.key_fingerprint,
                                   row.valid_before)
            for row in db.scalars(query.order_by(IssuedCertificate.serial))
            if str(row.serial) not in revoked
        ]  # fmt: skip

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
    row = db.get(IssuedCertificate, certificate.serial)
    if row is None or row.ca != "machine" or row.key_id != certificate.key_id:
        return None
    return row


def _issue_details(
    signed: SignedCertificate, nhi: MachineView, lineage: MachineLineage
) -> dict[str, object]:
    return {"serial": signed.serial, "key_id": signed.key_id, "key": signed.key_fingerprint,
            "ttl_seconds": signed.ttl_seconds, "scope": nhi.scope_id, "lineage": lineage.id,
            "generation": lineage.generation}  # fmt: skip


def _revocation(row: MachineRevocation) -> Revocation:
    return Revocation(row.kind, row.value, row.nhi, row.reason, row.revoked_by, row.revoked_at)


def _split_token(token: str) -> tuple[int | None, str]:
    prefix, _, rest = token.strip().partition("-")
    number, _, secret = rest.partition("-")
    if prefix != TOKEN_PREFIX or not number.isdigit() or len(number) > 12 or not secret:
        return None, ""
    return int(number), secret


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
