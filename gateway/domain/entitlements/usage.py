"""What identities actually did, read from the records: the other half of an entitlement review.

Every session either lane admitted is in the ``sessions`` table with its
identity, target account, source, kind, command and authority (``policy:ID``,
``grant:N``, ``breakglass:N``, ``nhi:NAME;serial=N``); grants name the rule
they came from. Registered keys are used where the human trail records a
``publickey`` factor; machine certificates and join tokens are in their own
tables. :class:`UsageReader` reads all of that once into a :class:`UsageIndex`,
which the report, the staleness findings and the suggestions then query
without touching the store again.

Sessions to the gateway itself (the console and ``NAME:admin``, target
``pamgate``) are administration, not access to a target, and are left out.
Plain Python over the store; no sockets.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select

from gateway.config import RESERVED_TARGET_NAMES
from gateway.store.database import Store
from gateway.store.models import (
    AccessGrant,
    HumanAuditEvent,
    IssuedCertificate,
    MachineJoinToken,
    SessionRecord,
    User,
    UserKey,
)


@dataclass
class PathUse:
    """Use of one path (an identity reaching one target account)."""

    sessions: int = 0
    last_used: datetime | None = None
    #: Authorities the sessions ran under (``policy:ID``, ``grant:N``, ...), with the last use.
    authorities: dict[str, datetime] = field(default_factory=dict)
    #: Exec commands run (``None`` for shells), with the last time each ran.
    commands: dict[str, datetime] = field(default_factory=dict)
    #: Source addresses the sessions came from, with the last time.
    sources: dict[str, datetime] = field(default_factory=dict)
    #: Session kinds (``exec``, ``pty``/``shell``, ``subsystem``...), with the last time.
    kinds: dict[str, datetime] = field(default_factory=dict)

    def add(
        self, authority: str, kind: str, command: str | None, source: str, at: datetime
    ) -> None:
        self.sessions += 1
        self.last_used = _later(self.last_used, at)
        for seen, key in ((self.authorities, authority), (self.sources, source),
                          (self.kinds, kind)):  # fmt: skip
            seen[key] = _later(seen.get(key), at)
        if command is not None:
            self.commands[command] = _later(self.commands.get(command), at)


@dataclass(frozen=True)
class OutstandingCredential:
    """A machine certificate still valid, or a join token still usable."""

    kind: str  # ``certificate`` or ``join-token``
    nhi: str
    ident: str  # ``serial 12`` or ``token 3``
    issued_at: datetime
    expires_at: datetime


@dataclass
class UsageIndex:
    """What the records say, read once (see the module docstring)."""

    #: (lane, identity, target, account) -> its use.
    paths: dict[tuple[str, str, str, str], PathUse] = field(default_factory=dict)
    #: rule id -> the last session admitted under it (directly or by a grant it gave).
    rules: dict[str, datetime] = field(default_factory=dict)
    #: session authority (``grant:N``, ``breakglass:N``) -> the rule behind it.
    authority_rules: dict[str, str] = field(default_factory=dict)
    #: key fingerprint -> the last sign-in it was a first factor of.
    keys: dict[str, datetime] = field(default_factory=dict)
    #: key fingerprint -> (its user, when it was registered).
    key_added: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    outstanding: list[OutstandingCredential] = field(default_factory=list)
    #: When the index was read.
    read_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def path(self, lane: str, identity: str, target: str, account: str) -> PathUse:
        """The use of one path (empty if never used)."""
        return self.paths.get((lane, identity, target, account)) or PathUse()

    def identity_paths(self, lane: str, identity: str) -> dict[tuple[str, str], PathUse]:
        """(target, account) -> use, for every path ``identity`` used on ``lane``."""
        return {
            (target, account): use
            for (path_lane, name, target, account), use in self.paths.items()
            if path_lane == lane and name == identity
        }

    def last_used(self, lane: str, identity: str) -> datetime | None:
        """The identity's last session on ``lane``, any target."""
        used = [use.last_used for use in self.identity_paths(lane, identity).values()]
        return max((at for at in used if at is not None), default=None)


class UsageReader:
    """Reads a :class:`UsageIndex` from the store."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    def read(self) -> UsageIndex:
        """Every session, grant, key use and outstanding machine credential, in one pass."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        index = UsageIndex(read_at=now)
        with self._store.transaction(write=False) as db:
            grant_rules = {
                grant_id: (rule_id, exception_id)
                for grant_id, rule_id, exception_id in db.execute(
                    select(AccessGrant.id, AccessGrant.rule_id, AccessGrant.exception_id)
                )
            }
            breakglass_rules = {
                exception_id: rule_id
                for rule_id, exception_id in grant_rules.values()
                if exception_id is not None
            }
            sessions = db.execute(
                select(
                    SessionRecord.lane, SessionRecord.user, SessionRecord.target,
                    SessionRecord.account, SessionRecord.authority, SessionRecord.kind,
                    SessionRecord.command, SessionRecord.source, SessionRecord.started_at,
                ).where(SessionRecord.target.not_in(sorted(RESERVED_TARGET_NAMES)))
            )  # fmt: skip
            for lane, user, target, account, authority, kind, command, source, at in sessions:
                key = (lane, user, target, account)
                index.paths.setdefault(key, PathUse()).add(authority, kind, command, source, at)
                rule = _rule_of(authority, grant_rules, breakglass_rules)
                if rule is not None:
                    index.authority_rules[authority] = rule
                    index.rules[rule] = _later(index.rules.get(rule), at)
            factors = db.execute(
                select(HumanAuditEvent.ts, HumanAuditEvent.details).where(
                    HumanAuditEvent.action == "auth.factor",
                    HumanAuditEvent.outcome == "success",
                )
            )
            for ts, details in factors:
                fingerprint = _json(details).get("key")
                if isinstance(fingerprint, str) and fingerprint:
                    at = _parse_ts(ts)
                    index.keys[fingerprint] = _later(index.keys.get(fingerprint), at)
            registered = db.execute(
                select(UserKey.fingerprint, User.name, UserKey.added_at).join(
                    User, User.id == UserKey.user_id
                )
            )
            for fingerprint, owner, added_at in registered:
                index.key_added[fingerprint] = (owner, added_at)
            certificates = db.execute(
                select(
                    IssuedCertificate.serial, IssuedCertificate.principal,
                    IssuedCertificate.issued_at, IssuedCertificate.valid_before,
                ).where(IssuedCertificate.ca == "machine", IssuedCertificate.valid_before > now)
            )  # fmt: skip
            for serial, principal, issued_at, valid_before in certificates:
                index.outstanding.append(OutstandingCredential(
                    "certificate", principal, f"serial {serial}", issued_at, valid_before
                ))  # fmt: skip
            tokens = db.execute(
                select(
                    MachineJoinToken.id, MachineJoinToken.nhi, MachineJoinToken.created_at,
                    MachineJoinToken.expires_at,
                ).where(MachineJoinToken.uses_left > 0, MachineJoinToken.expires_at > now)
            )  # fmt: skip
            for token_id, nhi, created_at, expires_at in tokens:
                index.outstanding.append(
                    OutstandingCredential(
                        "join-token", nhi, f"token {token_id}", created_at, expires_at
                    )  # fmt: skip
                )
        return index


def _rule_of(
    authority: str,
    grant_rules: dict[int, tuple[str, int | None]],
    breakglass_rules: dict[int, str],
) -> str | None:
    """The rule behind a human session's authority: ``policy:ID`` directly, a grant or a
    break-glass case through the grant it came from."""
    kind, _, value = authority.partition(";")[0].partition(":")
    if kind == "policy":
        return value or None
    if not value.isdigit():
        return None
    if kind == "grant":
        found = grant_rules.get(int(value))
        return found[0] if found else None
    if kind == "breakglass":
        return breakglass_rules.get(int(value))
    return None


def _later(first: datetime | None, second: datetime) -> datetime:
    return second if first is None else max(first, second)


def _json(text: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _parse_ts(text: str) -> datetime:
    """An audit timestamp (``2026-11-23T02:31:17.509812Z``)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
