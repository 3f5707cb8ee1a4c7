"""Just-in-time access: requests, approvals and the grants they produce.

A login that the policy puts under an ``approval`` rule becomes a request.
Approvers from the rule's approver groups approve or deny it; when the
rule's quorum of distinct approvers is reached, the request becomes a grant
with an end time. Sessions under a grant carry ``grant:N`` as their
authority and end when the grant does.

Rules that cannot be bent (each is checked here, whoever calls):

- a requester never approves (or denies) their own request;
- each approval comes from a distinct, enabled member of an approver group;
- approvals from users disabled since no longer count;
- one denial ends the request;
- deciding an expired, cancelled or decided request fails clearly.

Every step is written to the human audit trail in the same transaction.
Plain Python over the store; no sockets.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.config import RuleSettings, duration_seconds
from gateway.domain.alerts import WebhookAlerts
from gateway.domain.audit.trail import (
    ActorType,
    AuditEvent,
    AuditLog,
    AuditRecord,
    Trail,
    admin_authority,
)
from gateway.domain.wakeups import DecisionWakeups
from gateway.errors import PamgateError
from gateway.store.database import Store
from gateway.store.models import AccessGrant, AccessRequest, RequestApproval, User

#: Requests nobody answers expire after this long.
DEFAULT_REQUEST_TTL = timedelta(minutes=30)


class ApprovalError(PamgateError):
    """A request cannot be approved, denied or cancelled (and nothing changed)."""


@dataclass(frozen=True)
class RequestView:
    """A request as people see it."""

    id: int
    user: str
    target: str
    account: str
    reason: str
    rule_id: str
    approver_groups: tuple[str, ...]
    approvals_required: int
    approvals: tuple[str, ...]
    duration_seconds: int
    status: str
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    comment: str
    grant_id: int | None


@dataclass(frozen=True)
class GrantView:
    """A grant: who may reach what, until when, and why."""

    id: int
    user: str
    target: str
    account: str
    starts_at: datetime
    ends_at: datetime
    request_id: int | None
    revoked: bool
    revoke_reason: str
    #: The break-glass case behind an emergency grant.
    exception_id: int | None = None

    @property
    def authority(self) -> str:
        """``grant:N``, or ``breakglass:N`` for an emergency grant."""
        return f"breakglass:{self.exception_id}" if self.exception_id else f"grant:{self.id}"


class AccessRequests:
    """Creates requests and turns approvals into grants."""

    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        *,
        alerts: WebhookAlerts | None = None,
        request_ttl: timedelta = DEFAULT_REQUEST_TTL,
        clock: Callable[[], float] = time.time,
        wakeups: DecisionWakeups | None = None,
    ) -> None:
        self._store = store
        #: Sessions waiting for a decision are woken through it, in this process and others.
        self.wakeups = wakeups or DecisionWakeups()
        self._audit = audit
        self._alerts = alerts
        self._ttl = request_ttl
        self._clock = clock

    # -- requests ---------------------------------------------------------------

    def create(
        self,
        *,
        user: str,
        target: str,
        account: str,
        rule: RuleSettings,
        reason: str,
        source: str,
        duration: int | None = None,
    ) -> RequestView:
        """Open a request under ``rule``; ApprovalError if a required reason is missing."""
        reason = " ".join(reason.split())[:500]
        if rule.reason_required and len(reason) < 3:
            raise ApprovalError(f"rule {rule.id!r} requires a reason")
        now = self._now()
        with self._store.transaction() as db:
            request = AccessRequest(
                user=user,
                target=target,
                account=account,
                reason=reason,
                rule_id=rule.id,
                approver_groups=list(rule.approver_groups),
                approvals_required=rule.approvals_required,
                # A requested length is honoured up to the rule's maximum.
                duration_seconds=min(
                    duration or duration_seconds(rule.default_duration),
                    duration_seconds(rule.max_duration),
                ),
                status="pending",
                created_at=now,
                expires_at=now + self._ttl,
                comment="",
            )
            db.add(request)
            db.flush()
            record = self._event(
                db, user, ActorType.HUMAN, "request.created", request, source=source,
                authority=f"policy:{rule.id}", reason=reason,
            )  # fmt: skip
            view = _request_view(db, request)
        self._audit.committed(record)
        self._announce("request.created", view)
        return view

    def get(self, request_id: int) -> RequestView:
        """A request by id; one past its expiry is reported as expired.

        A read only (waiting sessions call it often): the expiry itself is
        written, and audited, by :meth:`expire_stale`, which a running node
        calls every few seconds.
        """
        with self._store.transaction(write=False) as db:
            request = db.get(AccessRequest, request_id)
            if request is None:
                raise ApprovalError(f"no request #{request_id}")
            return _request_view(db, request, self._now())

    def list(
        self, *, pending_only: bool = False, user: str | None = None, limit: int = 100
    ) -> list[RequestView]:
        """Requests, newest first (a read only; see :meth:`get` for expiry)."""
        now = self._now()
        query = select(AccessRequest).order_by(AccessRequest.id.desc()).limit(limit)
        if user is not None:
            query = query.where(AccessRequest.user == user)
        if pending_only:
            query = query.where(AccessRequest.status == "pending", AccessRequest.expires_at > now)
        with self._store.transaction(write=False) as db:
            return [_request_view(db, r, now) for r in db.scalars(query)]

    def approve(self, request_id: int, approver: str, comment: str = "") -> RequestView:
        """Add ``approver``'s approval; grant access once the quorum is reached.

        A refused attempt (own request, not an approver, not pending...) is
        audited before the ApprovalError reaches the caller.
        """
        try:
            return self._approve(request_id, approver, comment)
        except ApprovalError as exc:
            self._refused(request_id, approver, "approve", str(exc))
            raise

    def deny(self, request_id: int, approver: str, comment: str) -> RequestView:
        """Deny a request; one denial ends it. Refused attempts are audited."""
        try:
            return self._deny(request_id, approver, comment)
        except ApprovalError as exc:
            self._refused(request_id, approver, "deny", str(exc))
            raise

    def _refused(self, request_id: int, actor: str, attempted: str, reason: str) -> None:
        self._audit.record(Trail.HUMAN, AuditEvent(
            actor=actor, actor_type=ActorType.HUMAN, action="request.decision_refused",
            outcome="refused", reason=reason,
            details={"request": request_id, "attempted": attempted},
        ))  # fmt: skip

    def _approve(self, request_id: int, approver: str, comment: str) -> RequestView:
        records: list[AuditRecord] = []
        with self._store.transaction() as db:
            request = self._decidable(db, request_id, approver)
            existing = {a.approver for a in _approvals(db, request.id)}
            if approver in existing:
                raise ApprovalError(f"{approver} has already approved request #{request_id}")
            db.add(RequestApproval(request_id=request.id, approver=approver, comment=comment,
                                   at=self._now()))  # fmt: skip
            db.flush()
            records.append(self._event(
                db, approver, ActorType.HUMAN, "request.approved", request,
                authority=f"policy:{request.rule_id}", reason=comment,
            ))  # fmt: skip
            counting = _counting_approvers(db, request.id)
            if len(counting) >= request.approvals_required:
                grant = self._grant(db, request)
                # Listings show who decided, as for a denial: every approver counted.
                request.decided_by = ", ".join(counting)[:64]
                request.comment = comment
                records.append(self._event(
                    db, approver, ActorType.HUMAN, "grant.created", request,
                    authority=f"request:{request.id}",
                    reason=f"approved by {', '.join(counting)}",
                    grant=grant.id, ends_at=grant.ends_at.isoformat(),
                ))  # fmt: skip
                self.wakeups.announce(db, request.id)
            view = _request_view(db, request)
        for record in records:
            self._audit.committed(record)
        if view.status != "pending":
            self.wakeups.decided(request_id)
        self._announce(
            "request.approved" if view.status == "approved" else "request.approval", view
        )
        return view

    def _deny(self, request_id: int, approver: str, comment: str) -> RequestView:
        if not comment.strip():
            raise ApprovalError("a denial needs a comment for the requester")
        with self._store.transaction() as db:
            request = self._decidable(db, request_id, approver)
            request.status = "denied"
            request.decided_at = self._now()
            request.decided_by = approver
            request.comment = comment
            record = self._event(
                db, approver, ActorType.HUMAN, "request.denied", request,
                authority=f"policy:{request.rule_id}", reason=comment,
            )  # fmt: skip
            self.wakeups.announce(db, request.id)
            view = _request_view(db, request)
        self._audit.committed(record)
        self.wakeups.decided(request_id)
        self._announce("request.denied", view)
        return view

    def cancel(self, request_id: int, user: str) -> None:
        """The requester withdraws a pending request (Ctrl-C, disconnect)."""
        with self._store.transaction() as db:
            request = db.get(AccessRequest, request_id)
            if request is None or request.status != "pending" or request.user != user:
                return
            request.status = "cancelled"
            request.decided_at = self._now()
            record = self._event(db, user, ActorType.HUMAN, "request.cancelled", request)
            self.wakeups.announce(db, request.id)
        self._audit.committed(record)
        self.wakeups.decided(request_id)

    def expire_stale(self) -> int:
        """Mark pending requests past their expiry as expired, audited; returns how many.

        Looks first, in a read: the write (and on SQLite its database-wide lock)
        happens only when a request did expire.
        """
        now = self._now()
        with self._store.transaction(write=False) as db:
            overdue = db.scalar(
                select(func.count()).where(
                    AccessRequest.status == "pending", AccessRequest.expires_at <= now
                )
            )
        if not overdue:
            return 0
        records = []
        with self._store.transaction() as db:
            stale = db.scalars(
                select(AccessRequest).where(
                    AccessRequest.status == "pending", AccessRequest.expires_at <= now
                )
            ).all()
            for request in stale:
                request.status = "expired"
                request.decided_at = now
                records.append(self._event(
                    db, "gateway", ActorType.GATEWAY, "request.expired", request,
                    reason="nobody answered in time",
                ))  # fmt: skip
                self.wakeups.announce(db, request.id)
            expired = [request.id for request in stale]
        for record in records:
            self._audit.committed(record)
        for request_id in expired:
            self.wakeups.decided(request_id)
        return len(records)

    # -- grants -------------------------------------------------------------------

    def active_grant(
        self, user: str, target: str, account: str, *, at: datetime | None = None
    ) -> GrantView | None:
        """An unrevoked grant for this user and destination current at ``at`` (now), if any."""
        now = at or self._now()
        with self._store.transaction(write=False) as db:
            grant = db.scalars(
                select(AccessGrant)
                .where(
                    AccessGrant.user == user,
                    AccessGrant.target == target,
                    AccessGrant.account == account,
                    AccessGrant.revoked_at.is_(None),
                    AccessGrant.starts_at <= now,
                    AccessGrant.ends_at > now,
                )
                .order_by(AccessGrant.ends_at.desc())
            ).first()
            return grant_view(grant) if grant else None

    def active_grants(self, *, at: datetime) -> dict[tuple[str, str, str], GrantView]:
        """Every unrevoked grant current at ``at``, by (user, target, account), in one query
        (the longest-lasting one where several are): what :meth:`active_grant` finds for
        each destination."""
        with self._store.transaction(write=False) as db:
            grants = db.scalars(
                select(AccessGrant)
                .where(
                    AccessGrant.revoked_at.is_(None),
                    AccessGrant.starts_at <= at,
                    AccessGrant.ends_at > at,
                )
                .order_by(AccessGrant.ends_at)
            )
            return {(g.user, g.target, g.account): grant_view(g) for g in grants}

    def grant(self, grant_id: int) -> GrantView:
        with self._store.transaction(write=False) as db:
            grant = db.get(AccessGrant, grant_id)
            if grant is None:
                raise ApprovalError(f"no grant #{grant_id}")
            return grant_view(grant)

    def revoked_among(self, grant_ids: Collection[int]) -> dict[int, str]:
        """The revocation reason of each of these grants that was revoked (one query)."""
        if not grant_ids:
            return {}
        query = select(AccessGrant.id, AccessGrant.revoke_reason).where(
            AccessGrant.id.in_(list(grant_ids)), AccessGrant.revoked_at.is_not(None)
        )
        with self._store.transaction(write=False) as db:
            return {grant_id: reason for grant_id, reason in db.execute(query)}

    def list_grants(
        self, *, active_only: bool = False, user: str | None = None, limit: int = 100
    ) -> builtins.list[GrantView]:  # `list` here is the method above
        """Grants, newest first."""
        query = select(AccessGrant).order_by(AccessGrant.id.desc()).limit(limit)
        if user is not None:
            query = query.where(AccessGrant.user == user)
        if active_only:
            query = query.where(AccessGrant.revoked_at.is_(None), AccessGrant.ends_at > self._now())
        with self._store.transaction(write=False) as db:
            return [grant_view(g) for g in db.scalars(query)]

    def revoke(self, grant_id: int, actor: str, reason: str) -> GrantView:
        """End a grant now; sessions under it are closed by the lanes within seconds."""
        if not reason.strip():
            raise ApprovalError("revoking a grant needs a reason")
        with self._store.transaction() as db:
            grant = db.get(AccessGrant, grant_id)
            if grant is None:
                raise ApprovalError(f"no grant #{grant_id}")
            if grant.revoked_at is not None:
                raise ApprovalError(f"grant #{grant_id} was revoked already")
            grant.revoked_at = self._now()
            grant.revoked_by = actor
            grant.revoke_reason = reason
            record = self._audit.append(db, Trail.HUMAN, AuditEvent(
                actor=actor, actor_type=ActorType.ADMIN, action="grant.revoked",
                target=grant.target, account=grant.account, reason=reason,
                authority=admin_authority(actor), details={"grant": grant.id, "user": grant.user},
            ))  # fmt: skip
            view = grant_view(grant)
        self._audit.committed(record)
        return view

    # -- internals ----------------------------------------------------------------

    def _announce(self, kind: str, view: RequestView) -> None:
        # A link-free summary: approvers are paged, the console does the rest.
        if self._alerts is not None:
            self._alerts.send(kind, {
                "request": view.id, "user": view.user, "target": view.target,
                "account": view.account, "reason": view.reason, "status": view.status,
                "approvals": list(view.approvals), "needed": view.approvals_required,
                "duration_seconds": view.duration_seconds, "decided_by": view.decided_by,
                "comment": view.comment,
            }, authority=f"policy:{view.rule_id}")  # fmt: skip

    def _decidable(self, db: Session, request_id: int, approver: str) -> AccessRequest:
        request = db.get(AccessRequest, request_id, with_for_update=True)
        if request is None:
            raise ApprovalError(f"no request #{request_id}")
        if request.status == "pending" and request.expires_at <= self._now():
            raise ApprovalError(f"request #{request_id} has expired")
        if request.status != "pending":
            raise ApprovalError(f"request #{request_id} is {request.status}, not pending")
        if approver == request.user:
            raise ApprovalError("you cannot decide your own request")
        user = db.scalar(select(User).where(User.name == approver))
        if user is None or user.disabled:
            raise ApprovalError(f"{approver} is not an enabled user")
        if not set(user.groups or []) & set(request.approver_groups or []):
            raise ApprovalError(
                f"{approver} is not in an approver group of rule {request.rule_id!r} "
                f"({', '.join(request.approver_groups or [])})"
            )
        return request

    def _grant(self, db: Session, request: AccessRequest) -> AccessGrant:
        now = self._now()
        grant = AccessGrant(
            user=request.user,
            target=request.target,
            account=request.account,
            rule_id=request.rule_id,
            request_id=request.id,
            kind="approval",
            starts_at=now,
            ends_at=now + timedelta(seconds=request.duration_seconds),
            revoke_reason="",
        )
        db.add(grant)
        db.flush()
        request.status = "approved"
        request.decided_at = now
        request.grant_id = grant.id
        return grant

    def _event(
        self,
        db: Session,
        actor: str,
        actor_type: ActorType,
        action: str,
        request: AccessRequest,
        *,
        source: str | None = None,
        authority: str | None = None,
        reason: str = "",
        **details: object,
    ) -> AuditRecord:
        return self._audit.append(db, Trail.HUMAN, AuditEvent(
            actor=actor, actor_type=actor_type, action=action, target=request.target,
            account=request.account, source=source, reason=reason, authority=authority,
            details={"request": request.id, "user": request.user, **details},
        ))  # fmt: skip

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)


def _approvals(db: Session, request_id: int) -> list[RequestApproval]:
    return list(db.scalars(select(RequestApproval).where(RequestApproval.request_id == request_id)))


def _counting_approvers(db: Session, request_id: int) -> list[str]:
    """Approvers whose approval still counts (not disabled since)."""
    names = [a.approver for a in _approvals(db, request_id)]
    enabled = set(
        db.scalars(select(User.name).where(User.name.in_(names), User.disabled.is_(False)))
    )
    return [name for name in names if name in enabled]


def _request_view(db: Session, request: AccessRequest, now: datetime | None = None) -> RequestView:
    """The request as its reader should see it: pending past its expiry reads ``expired``."""
    status = request.status
    if status == "pending" and now is not None and request.expires_at <= now:
        status = "expired"
    return RequestView(
        id=request.id,
        user=request.user,
        target=request.target,
        account=request.account,
        reason=request.reason,
        rule_id=request.rule_id,
        approver_groups=tuple(request.approver_groups or ()),
        approvals_required=request.approvals_required,
        approvals=tuple(_counting_approvers(db, request.id)),
        duration_seconds=request.duration_seconds,
        status=status,
        created_at=request.created_at,
        expires_at=request.expires_at,
        decided_at=request.decided_at,
        decided_by=request.decided_by,
        comment=request.comment,
        grant_id=request.grant_id,
    )


def grant_view(grant: AccessGrant) -> GrantView:
    return GrantView(
        id=grant.id,
        user=grant.user,
        target=grant.target,
        account=grant.account,
        starts_at=grant.starts_at,
        ends_at=grant.ends_at,
        request_id=grant.request_id,
        revoked=grant.revoked_at is not None,
        revoke_reason=grant.revoke_reason,
        exception_id=grant.exception_id,
    )
