"""Revoking machine certificates, offboarding NHIs, and the KRL for targets.

A revocation names a serial, a key id or a key. The machine lane checks it at
every login and every new session, live sessions check it each second, and
:meth:`MachineRevocations.write_krl` turns the list into an OpenSSH KRL so
targets' sshds can enforce it too (``RevokedKeys``). Both say the same, as
OpenSSH's krl.c decides: a revoked key revokes every certificate *on* it and,
if it is the CA's key, every certificate the CA signed; serials are 1 to
2^64-1 (serial 0 means "none" and is never revoked by serial); key ids are
what ``ssh-keygen -k`` can read back (one line, no ``#``, no edge spaces).

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
from gateway.crypto.machine_ca import MAX_SERIAL, MachineCA, issued_certificate
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
    keys = (certificate.key_fingerprint, certificate.signing_key_fingerprint)
    row = db.scalars(select(MachineRevocation).where(or_(
        (MachineRevocation.kind == "serial") & (MachineRevocation.value == str(certificate.serial)),
        (MachineRevocation.kind == "key_id") & (MachineRevocation.value == certificate.key_id),
        (MachineRevocation.kind == "key") & MachineRevocation.fingerprint.in_(keys),
    ))).first()  # fmt: skip
    if row is None:
        return None
    if row.kind == "key" and row.fingerprint == certificate.signing_key_fingerprint:
        return f"certificate revoked (its CA key {row.fingerprint} is revoked)"
    label = {"serial": f"serial {row.value}", "key_id": f"key id {row.value!r}",
             "key": f"key {row.fingerprint}"}[row.kind]  # fmt: skip
    return f"certificate revoked ({label})"


def serial_refusal(serial: int) -> str | None:
    """Why ``serial`` cannot be revoked by serial, or None."""
    if serial == 0:
        return (
            "serial 0 cannot be revoked by serial: it means the certificate has no serial, and "
            "OpenSSH never revokes it that way (ssh-keygen -k refuses it). Revoke such a "
            "certificate with --key-id or --key"
        )
    if not 1 <= serial <= MAX_SERIAL:
        return f"--serial must be a certificate serial, 1 to {MAX_SERIAL}"
    return None


def key_id_refusal(key_id: str) -> str | None:
    """Why ``key_id`` cannot be revoked by key id, or None.

    The KRL is written by ``ssh-keygen -k`` from ``id:`` lines, which end at
    a line break or a ``#`` (a comment) and lose edge spaces: such a key id
    would revoke another one on targets, or none.
    """
    if not key_id.strip():
        return "--key-id must not be empty"
    if key_id != key_id.strip(" \t"):
        return "--key-id has spaces at its start or end, which an OpenSSH KRL cannot hold"
    if any(char in key_id for char in "#\n\r\0"):
        return (
            "--key-id contains '#', a line break or a NUL byte, which an OpenSSH KRL cannot "
            "hold: revoke by --serial or --key instead"
        )
    return None


def _spec_refusal(entry: Revocation) -> str | None:
    """Why a stored revocation cannot go into a KRL (rows older than these checks)."""
    if entry.kind == "serial":
        return serial_refusal(int(entry.value))
    if entry.kind == "key_id":
        return key_id_refusal(entry.value)
    return None


@dataclass(frozen=True)
class KrlWritten:
    """What :meth:`MachineRevocations.write_krl` put in the KRL, and what it could not."""

    entries: int
    #: Revocations no KRL can hold, with the reason.
    left_out: list[tuple[Revocation, str]]


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
        refused = (serial_refusal(serial) if serial is not None else None) or (
            key_id_refusal(key_id) if key_id is not None else None
        )
        if refused:
            raise MachineError(refused)
        now = self._now()
        with self._store.transaction() as db:
            entries: list[tuple[str, str, str | None, str | None]] = []
            if name is not None:
                load_machine(db, name)
                # Superseded ones too: a copy of one may still be out there.
                entries += [("serial", str(cert.serial), None, name)
                            for cert in self._outstanding(db, name, superseded=True)]  # fmt: skip
            elif serial is not None:
                issued = issued_certificate(db, serial)
                owner = issued.principal if issued is not None and issued.ca == "machine" else None
                entries.append(("serial", str(serial), None, owner))
            elif key_id is not None:
                owner = db.scalar(select(IssuedCertificate.principal).where(
                    IssuedCertificate.ca == "machine", IssuedCertificate.key_id == key_id,
                ).limit(1))  # fmt: skip
                entries.append(("key_id", key_id, None, owner))
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

    def write_krl(self, path: Path) -> KrlWritten:
        """Write every revocation as an OpenSSH KRL.

        Revocations stored before the serial and key id checks existed, that
        no KRL can hold, are left out and returned with the reason, so one
        bad row never stops every later KRL; the gateway still refuses them.
        """
        written, left_out = [], []
        for entry in self.revocations():
            refused = _spec_refusal(entry)
            if refused:
                left_out.append((entry, refused))
            else:
                written.append(entry)
        self._ca.write_krl([entry.spec_line() for entry in written], path)
        return KrlWritten(len(written), left_out)

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
