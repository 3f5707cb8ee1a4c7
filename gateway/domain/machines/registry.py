"""Non-human identities (NHIs): the registry behind the machine lane.

Each NHI has a business owner and a technical owner (both required), a
purpose, and an explicit scope: target accounts, allowed commands, source
networks, and whether a pty or SFTP is allowed. Its certificates live at
most ``max_ttl`` (default 15 minutes, never more than 24 hours). Its status
is ``active``, ``suspended`` or ``offboarded``; offboarding is final and the
name cannot be registered again.

Command patterns are either an exact command string, or ``re:PATTERN``, a
Python regular expression that must match the *whole* command
(``re.fullmatch``), e.g. ``re:pg_dump( --schema-only)? app``.

Every change is written to the **machine** audit trail with the acting
administrator. Plain Python over the store; no sockets.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.config import GatewayConfig
from gateway.crypto.machine_ca import CertificateScope
from gateway.domain.audit.trail import (
    ActorType,
    AuditEvent,
    AuditLog,
    AuditRecord,
    Trail,
    admin_authority,
)
from gateway.domain.identities import validate_name
from gateway.errors import PamgateError
from gateway.store.database import Store
from gateway.store.models import NonHumanIdentity

DEFAULT_MAX_TTL = 15 * 60
MAX_TTL_CEILING = 24 * 3600
KINDS = ("service-account", "ci-pipeline", "agent", "other")
STATUSES = ("active", "suspended", "offboarded")
#: Login names the machine lane keeps for itself (``pamgate-join``).
RESERVED_PREFIX = "pamgate-"


class MachineError(PamgateError):
    """A machine identity cannot be created or changed as asked (nothing changed)."""


@dataclass(frozen=True)
class ScopeTarget:
    """One target account an NHI may use."""

    target: str
    account: str


@dataclass(frozen=True)
class MachineView:
    """A read-only snapshot of an NHI."""

    name: str
    kind: str
    owner: str
    tech_owner: str
    purpose: str
    targets: tuple[ScopeTarget, ...]
    commands: tuple[str, ...]
    sources: tuple[str, ...]
    allow_pty: bool
    allow_sftp: bool
    max_ttl_seconds: int
    review_by: datetime | None
    status: str
    #: Why it was last suspended, resumed or offboarded (or locked), if anyone said.
    status_reason: str | None
    created_at: datetime
    last_used_at: datetime | None
    #: Directories file transfers are held to; None means anywhere the account can go.
    sftp_paths: tuple[str, ...] | None = None

    @property
    def scope_id(self) -> str:
        """The authority machine-lane events carry: the registration."""
        return f"nhi:{self.name}"

    def review_overdue(self, now: datetime) -> bool:
        return self.review_by is not None and now > self.review_by

    def certificate_scope(self) -> CertificateScope:
        """What this NHI's certificates say: ``force-command`` when it has exactly one exact
        command and no SFTP (a forced command would replace the SFTP subsystem, as sshd
        does), its source networks, pty only if allowed, and the registration."""
        exact = [c for c in self.commands if not c.startswith("re:")]
        forced = exact[0] if len(self.commands) == 1 and exact and not self.allow_sftp else None
        return CertificateScope(
            principal=self.name, force_command=forced, source_addresses=self.sources,
            permit_pty=self.allow_pty, scope_id=self.scope_id,
        )  # fmt: skip

    def command_allowed(self, command: str) -> bool:
        """True if ``command`` matches one of the allowed patterns."""
        return any(command_matches(pattern, command) for pattern in self.commands)


def command_matches(pattern: str, command: str) -> bool:
    """Exact string, or ``re:PATTERN`` matched against the whole command."""
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], command) is not None
    return pattern == command


def parse_scope_target(text: str, config: GatewayConfig) -> ScopeTarget:
    """``TARGET[:ACCOUNT]`` checked against the configured targets."""
    name, _, account = text.partition(":")
    target = config.target(name)
    if target is None:
        raise MachineError(f"--target {text!r}: no target named {name!r} in the config")
    chosen = account or target.account_when_unnamed
    if chosen not in target.accounts:
        raise MachineError(
            f"--target {text!r}: account {chosen!r} is not one of {', '.join(target.accounts)}"
        )
    return ScopeTarget(target.name, chosen)


class MachineRegistry:
    """Registers NHIs and changes their status."""

    def __init__(
        self, store: Store, audit: AuditLog, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock

    def add(
        self,
        name: str,
        *,
        actor: str,
        kind: str,
        owner: str,
        tech_owner: str,
        purpose: str,
        targets: Iterable[ScopeTarget],
        commands: Iterable[str],
        sources: Iterable[str] = (),
        allow_pty: bool = False,
        allow_sftp: bool = False,
        max_ttl_seconds: int = DEFAULT_MAX_TTL,
        review_by: datetime | None = None,
        sftp_paths: Iterable[str] | None = None,
    ) -> MachineView:
        """Register an NHI. Everything is checked before anything is written."""
        validate_name("machine identity", name)
        if name.startswith(RESERVED_PREFIX):
            raise MachineError(f"names starting with {RESERVED_PREFIX!r} are reserved for pamgate")
        if kind not in KINDS:
            raise MachineError(f"--kind must be one of {', '.join(KINDS)}")
        for label, value in (
            ("--owner", owner),
            ("--tech-owner", tech_owner),
            ("--purpose", purpose),
        ):
            if not value.strip():
                raise MachineError(f"{label} is required")
        scope = list(targets)
        if not scope:
            raise MachineError("at least one --target is required")
        patterns = list(commands)
        if not patterns:
            raise MachineError("at least one --command is required (exact, or re:PATTERN)")
        for pattern in patterns:
            body = pattern[3:] if pattern.startswith("re:") else pattern
            if not body.strip():
                raise MachineError("--command must not be empty (nor an empty re: pattern)")
            if any(ord(char) < 0x20 or ord(char) == 0x7F for char in body):
                raise MachineError(f"--command {pattern!r}: control characters are not allowed")
            if pattern.startswith("re:"):
                try:
                    re.compile(pattern[3:])
                except re.error as exc:
                    raise MachineError(f"--command {pattern!r}: bad pattern: {exc}") from None
        paths = _check_sftp_paths(sftp_paths, allow_sftp)
        networks = list(sources)
        for network in networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise MachineError(f"--source {network!r} is not a CIDR") from None
        if not 60 <= max_ttl_seconds <= MAX_TTL_CEILING:
            raise MachineError("--max-ttl must be between 1m and 24h")
        now = self._now()
        if review_by is not None and review_by <= now:
            raise MachineError("--review-by must be a date in the future")
        with self._store.transaction() as db:
            existing = db.scalar(select(NonHumanIdentity).where(NonHumanIdentity.name == name))
            if existing is not None:
                if existing.status == "offboarded":
                    raise MachineError(f"{name!r} was offboarded; its name cannot be used again")
                raise MachineError(f"machine identity {name!r} exists already")
            row = NonHumanIdentity(
                name=name, kind=kind, owner=owner.strip(), tech_owner=tech_owner.strip(),
                purpose=purpose.strip(),
                targets=[{"target": t.target, "account": t.account} for t in scope],
                commands=patterns, sources=networks, allow_pty=allow_pty, allow_sftp=allow_sftp,
                max_ttl_seconds=max_ttl_seconds, review_by=review_by, status="active",
                sftp_paths=paths,
                created_at=now, updated_at=now,
            )  # fmt: skip
            db.add(row)
            db.flush()
            record = self._event(db, actor, "machine.created", row)
            view = machine_view(row)
        self._audit.committed(record)
        return view

    def get(self, name: str) -> MachineView:
        with self._store.transaction(write=False) as db:
            return machine_view(load_machine(db, name))

    def views(self, names: Collection[str]) -> dict[str, MachineView]:
        """Each of these NHIs as it is now (status and scope), in one query; missing ones
        are left out."""
        if not names:
            return {}
        query = select(NonHumanIdentity).where(NonHumanIdentity.name.in_(list(names)))
        with self._store.transaction(write=False) as db:
            return {row.name: machine_view(row) for row in db.scalars(query)}

    def list(self) -> list[MachineView]:
        with self._store.transaction(write=False) as db:
            rows = db.scalars(select(NonHumanIdentity).order_by(NonHumanIdentity.name))
            return [machine_view(row) for row in rows]

    def set_status(self, name: str, status: str, *, actor: str, reason: str = "") -> MachineView:
        """Suspend, resume (``active``) or offboard. Offboarding is final."""
        if status not in STATUSES:
            raise MachineError(f"status must be one of {', '.join(STATUSES)}")
        with self._store.transaction() as db:
            row = load_machine(db, name, for_update=True)
            if row.status == "offboarded":
                raise MachineError(f"{name!r} is offboarded; that is final")
            if row.status == status:
                raise MachineError(f"{name!r} is {status} already")
            row.status = status
            row.status_reason = reason or None
            row.updated_at = self._now()
            action = {"active": "machine.resumed", "suspended": "machine.suspended",
                      "offboarded": "machine.offboarded"}[status]  # fmt: skip
            record = self._event(db, actor, action, row, reason=reason)
            view = machine_view(row)
        self._audit.committed(record)
        return view

    def narrow_scope(
        self,
        name: str,
        *,
        actor: str,
        targets: Iterable[ScopeTarget],
        commands: Iterable[str],
        sources: Iterable[str],
        allow_pty: bool,
        allow_sftp: bool,
        reason: str,
    ) -> MachineView:
        """Replace an active or suspended NHI's scope by a narrower one (``machine.scope_narrowed``
        in the machine trail). MachineError, changing nothing, if anything in the new scope is
        not already in the old one: a target account it did not have, a command no current
        pattern allows (a ``re:`` pattern must be kept verbatim), a network outside its
        current ones, or pty or SFTP it was not allowed. The next login and command are
        judged by the new scope, and live sessions outside it end within about 2 s."""
        scope, patterns, networks = list(targets), list(commands), list(sources)
        if not scope or not patterns:
            raise MachineError(
                "a narrower scope needs at least one target and one command; "
                "suspend or offboard an NHI that needs none"
            )
        with self._store.transaction() as db:
            row = load_machine(db, name, for_update=True)
            if row.status == "offboarded":
                raise MachineError(f"{name!r} is offboarded; that is final")
            old = machine_view(row)
            for entry in scope:
                if entry not in old.targets:
                    raise MachineError(f"{entry.target}:{entry.account} is not in {name}'s scope")
            for pattern in patterns:
                if pattern.startswith("re:"):
                    if pattern not in old.commands:
                        raise MachineError(f"command pattern {pattern!r} is not in {name}'s scope")
                elif not old.command_allowed(pattern):
                    raise MachineError(f"command {pattern!r} is not allowed by {name}'s scope")
            for network in networks:
                if not _network_within(network, old.sources):
                    raise MachineError(f"source {network!r} is outside {name}'s networks")
            if (allow_pty and not old.allow_pty) or (allow_sftp and not old.allow_sftp):
                raise MachineError(f"{name} was not allowed a pty or SFTP: that is not narrower")
            row.targets = [{"target": t.target, "account": t.account} for t in scope]
            row.commands = patterns
            row.sources = networks
            row.allow_pty = allow_pty
            row.allow_sftp = allow_sftp
            if not allow_sftp:
                row.sftp_paths = None
            row.updated_at = self._now()
            record = self._event(db, actor, "machine.scope_narrowed", row, reason=reason,
                                 extra={"before": {"targets": [f"{t.target}:{t.account}"
                                                               for t in old.targets],
                                                   "commands": list(old.commands),
                                                   "sources": list(old.sources),
                                                   "allow_pty": old.allow_pty,
                                                   "allow_sftp": old.allow_sftp}})  # fmt: skip
            view = machine_view(row)
        self._audit.committed(record)
        return view

    def _event(
        self, db: Session, actor: str, action: str, row: NonHumanIdentity, *, reason: str = "",
        extra: dict[str, object] | None = None,
    ) -> AuditRecord:  # fmt: skip
        # Administration of machines belongs in the machine trail.
        return self._audit.append(db, Trail.MACHINE, AuditEvent(
            actor=actor, actor_type=ActorType.ADMIN, action=action, target=f"nhi:{row.name}",
            reason=reason, authority=admin_authority(actor),
            details={"status": row.status, "owner": row.owner, "tech_owner": row.tech_owner,
                     "targets": row.targets, "commands": row.commands,
                     **({"sources": row.sources, "allow_pty": row.allow_pty,
                         "allow_sftp": row.allow_sftp, **extra} if extra else {})},
        ))  # fmt: skip

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)


def load_machine(db: Session, name: str, *, for_update: bool = False) -> NonHumanIdentity:
    """The NHI's row inside a caller's transaction; MachineError if there is none."""
    query = select(NonHumanIdentity).where(NonHumanIdentity.name == name)
    row = db.scalar(query.with_for_update() if for_update else query)
    if row is None:
        raise MachineError(f"no machine identity named {name!r}")
    return row


def _network_within(network: str, networks: Iterable[str]) -> bool:
    """Whether ``network`` lies inside one of ``networks`` (none: anywhere)."""
    try:
        inner = ipaddress.ip_network(network, strict=False)
    except ValueError:
        raise MachineError(f"source {network!r} is not a CIDR") from None
    outer = list(networks)
    if not outer:
        return True
    for text in outer:
        candidate = ipaddress.ip_network(text, strict=False)
        if inner.version == candidate.version and inner.subnet_of(candidate):  # type: ignore[arg-type]
            return True
    return False


def _check_sftp_paths(paths: Iterable[str] | None, allow_sftp: bool) -> list[str] | None:
    """Absolute, normalised directories without control characters; None when not given."""
    if paths is None:
        return None
    checked = []
    for path in paths:
        if not allow_sftp:
            raise MachineError("--sftp-path needs --allow-sftp")
        if not path.startswith("/") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
            raise MachineError(f"--sftp-path {path!r}: give an absolute directory")
        if ".." in path.split("/"):
            raise MachineError(f"--sftp-path {path!r}: '..' is not allowed")
        checked.append(path.rstrip("/") or "/")
    return checked or None


def machine_view(row: NonHumanIdentity) -> MachineView:
    """A read-only snapshot of an NHI row."""
    return MachineView(
        name=row.name, kind=row.kind, owner=row.owner, tech_owner=row.tech_owner,
        purpose=row.purpose,
        targets=tuple(ScopeTarget(t["target"], t["account"]) for t in row.targets),
        commands=tuple(row.commands), sources=tuple(row.sources), allow_pty=row.allow_pty,
        allow_sftp=row.allow_sftp, max_ttl_seconds=row.max_ttl_seconds, review_by=row.review_by,
        status=row.status, status_reason=row.status_reason, created_at=row.created_at,
        last_used_at=row.last_used_at,
        sftp_paths=tuple(row.sftp_paths) if row.sftp_paths is not None else None,
    )  # fmt: skip
