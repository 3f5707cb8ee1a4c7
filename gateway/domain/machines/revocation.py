"""Revoking machine certificates, offboarding NHIs, and the KRL for targets.

A revocation names a serial, a key id or a key. The machine lane checks it at
every login and every new session, live sessions check it each second, and
:meth:`MachineRevocations.write_krl` turns the list into an OpenSSH KRL so
targets' sshds can enforce it too (``RevokedKeys``).

Plain Python over the store; no sockets. Every change is audited in the
**machine** trail in the same transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.crypto.certificates import PresentedCertificate
from gateway.crypto.keys import parse_public_key_line
from gateway.crypto.machine_ca import MachineCA
from gateway.domain.audit.trail import ActorType, AuditEvent, AuditLog, Trail, admin_authority
from gateway.domain.machines.registry import MachineError, MachineRegistry, load_machine
from gateway.store.database import Store
from gateway.store.models import (
    IssuedCertificate,
    MachineJoinToken,
    MachineLineage,
    MachineRevocation,
)


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


def revocation_of(db: Session, certificate: PresentedCertificate) -> str | None:
    """Why ``certificate`` is revoked (inside a caller's transaction), or None."""
    row = db.scalars(select(MachineRevocation).where(or_(
        (MachineRevocation.kind == "serial") & (MachineRevocation.value == str(certificate.serial)),
        (MachineRevocation.kind == "key_id") & (MachineRevocation.value == certificate.key_id),
        (MachineRevocation.kind == "key")
        & (MachineRevocation.fingerprint == certificate.key_fingerprint),
    ))).first()  # fmt: skip
    if row is None:
        return None
    label = {"serial": f"serial {row.value}", "key_id": f"key id {row.value!r}",
             "key": f"key {row.fingerprint}"}[row.kind]  # fmt: skip
    return f"certificate revoked ({label})"


class MachineRevocations:
    """Revokes machine certificates and offboards NHIs."""

    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        registry: MachineRegistry,
        ca: MachineCA,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._audit = audit
        self._registry = registry
        self._ca = ca
        self._clock = clock

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
                # Superseded ones too: a copy of one may still be out there.
                entries += [("serial", str(cert.serial), None, name)
                            for cert in self._outstanding(db, name, superseded=True)]  # fmt: skip
            elif serial is not None:
                issued = db.get(IssuedCertificate, serial)
                owner = issued.principal if issued is not None and issued.ca == "machine" else None
                entries.append(("serial", str(serial), None, owner))
            elif key_id is not None:
                owner = db.scalar(select(IssuedCertificate.principal).where(
                    IssuedCertificate.ca == "machine", IssuedCertificate.key_id == key_id.strip(),
                ).limit(1))  # fmt: skip
                entries.append(("key_id", key_id.strip(), None, owner))
            else:
                assert key_line is not None
                key_data, key_fingerprint, _ = parse_public_key_line(key_line)
                entries.append(("key", key_data, key_fingerprint, None))
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
            record = self._audit.append(db, Trail.MACHINE, AuditEvent(
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
        """Offboard ``name`` for good: revoke its join tokens and outstanding certificates.

        The status changes first: from then on no login, join or renewal
        succeeds, even if the revocations below were interrupted.
        """
        self._registry.set_status(name, "offboarded", actor=actor, reason=reason)
        with self._store.transaction() as db:
            tokens = list(db.scalars(select(MachineJoinToken).where(
                MachineJoinToken.nhi == name, MachineJoinToken.uses_left > 0)))  # fmt: skip
            record = None
            if tokens:
                for token in tokens:
                    token.uses_left = 0
                record = self._audit.append(db, Trail.MACHINE, AuditEvent(
                    actor=actor, actor_type=ActorType.ADMIN, action="machine.tokens_revoked",
                    target=f"nhi:{name}", reason=reason or "offboarded",
                    authority=admin_authority(actor),
                    details={"token_ids": [token.id for token in tokens]},
                ))  # fmt: skip
        if record is not None:
            self._audit.committed(record)
        return self.revoke(actor=actor, reason=reason or "offboarded", name=name)

    def revocation_reason(self, certificate: PresentedCertificate) -> str | None:
        """Why ``certificate`` is revoked, or None if it is not."""
        with self._store.transaction(write=False) as db:
            return revocation_of(db, certificate)

    def revocations(self) -> list[Revocation]:
        with self._store.transaction(write=False) as db:
            rows = db.scalars(select(MachineRevocation).order_by(MachineRevocation.id))
            return [_revocation(row) for row in rows]

    def write_krl(self, path: Path) -> int:
        """Write every revocation as an OpenSSH KRL; returns how many entries it holds."""
        entries = self.revocations()
        self._ca.write_krl([entry.spec_line() for entry in entries], path)
        return len(entries)

    def outstanding(self, name: str | None = None) -> list[OutstandingCertificate]:
        """Certificates in use: not expired, not revoked, not replaced by a renewal."""
        with self._store.transaction(write=False) as db:
            return self._outstanding(db, name, superseded=False)

    def _outstanding(
        self, db: Session, name: str | None, *, superseded: bool
    ) -> list[OutstandingCertificate]:
        revoked_serials = select(MachineRevocation.value).where(MachineRevocation.kind == "serial")
        revoked_ids = select(MachineRevocation.value).where(MachineRevocation.kind == "key_id")
        query = select(IssuedCertificate).where(
            IssuedCertificate.ca == "machine",
            IssuedCertificate.valid_before > self._now(),
            IssuedCertificate.key_id.not_in(revoked_ids),
        )
        if name is not None:
            query = query.where(IssuedCertificate.principal == name)
        if not superseded:
            query = query.outerjoin(
                MachineLineage, MachineLineage.id == IssuedCertificate.lineage_id
            ).where(
                or_(
                    MachineLineage.id.is_(None),
                    IssuedCertificate.generation >= MachineLineage.generation,
                )
            )
        revoked = set(db.scalars(revoked_serials))
        return [
            OutstandingCertificate(row.serial, row.principal, row.key_id, row.key_fingerprint,
                                   row.valid_before)
            for row in db.scalars(query.order_by(IssuedCertificate.serial))
            if str(row.serial) not in revoked
        ]  # fmt: skip

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)


def _revocation(row: MachineRevocation) -> Revocation:
    return Revocation(row.kind, row.value, row.nhi, row.reason, row.revoked_by, row.revoked_at)
