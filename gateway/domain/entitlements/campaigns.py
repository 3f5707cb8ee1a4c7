"""Review campaigns: every identity's access put before its owner, decided, and acted on.

``start`` opens one item per identity (machines, humans or all) with its
reviewers and the evidence they decide on, fixed at that moment: its paths
(:mod:`.effective`), last use, findings (:mod:`.stale`) and the narrower scope
suggested (:mod:`.suggest`). Reviewers:

- an NHI's business and technical owner, where they name a pamgate user or group;
- a person's manager groups (``[reviews] manager_groups``, by the person's groups);
- always the members of ``[reviews] reviewer_groups``.

A reviewer decides ``keep``, ``narrow`` (apply the suggestion the item
carries), ``suspend`` or ``offboard``, with a note; never on an item about
themselves. The decision and what it changed are audited in the trail of the
identity's type (``review.decided``), next to the change itself
(``machine.scope_narrowed``, ``machine.suspended``, ``user.disabled``...).

Items not decided by the campaign's due date are escalated
(:meth:`ReviewCampaigns.escalate_overdue`): a ``review.overdue`` webhook, a
``review.escalated`` event, and, with ``[reviews] suspend_overdue``, the identity
suspended (an NHI) or disabled (a person). An escalated item can still be
decided. Plain Python over the store; no sockets.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from gateway.config import NAME_RE, GatewayConfig
from gateway.domain.alerts import WebhookAlerts
from gateway.domain.audit.actors import ActingOperator
from gateway.domain.audit.trail import (
    ActorType,
    AuditEvent,
    AuditLog,
    AuditRecord,
    Trail,
    admin_authority,
)
from gateway.domain.entitlements.analysis import Entitlements, check_days
from gateway.domain.entitlements.stale import stale_findings
from gateway.domain.entitlements.suggest import ScopeSuggestion, suggest_groups, suggest_scope
from gateway.domain.identities import UserDirectory, UserView
from gateway.domain.machines.registry import MachineRegistry, MachineView
from gateway.domain.machines.revocation import MachineRevocations
from gateway.errors import PamgateError
from gateway.store.database import Store
from gateway.store.models import ReviewCampaign, ReviewItem

logger = logging.getLogger("pamgate.reviews")

SCOPES = ("machines", "humans", "all")
DECISIONS = ("keep", "narrow", "suspend", "offboard")
#: The actor of what the gateway does to overdue items.
ESCALATION_ACTOR = "gateway:review-escalation"


class ReviewError(PamgateError):
    """A campaign cannot be started or an item decided as asked (nothing changed)."""


@dataclass(frozen=True)
class CampaignView:
    id: int
    scope: str
    due_at: datetime
    created_by: str
    created_at: datetime
    stale_days: int
    #: status -> number of items.
    counts: dict[str, int]

    def overdue(self, now: datetime) -> bool:
        return now > self.due_at and self.counts.get("pending", 0) > 0

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "scope": self.scope, "due_at": self.due_at,
                "created_by": self.created_by, "created_at": self.created_at,
                "stale_days": self.stale_days, "items": self.counts}  # fmt: skip


@dataclass(frozen=True)
class ItemView:
    id: int
    campaign_id: int
    identity_type: str
    identity: str
    reviewers: tuple[str, ...]
    status: str
    evidence: dict[str, Any]
    decision: str | None
    note: str
    decided_by: str | None
    decided_at: datetime | None
    applied: dict[str, Any] | None
    escalated_at: datetime | None

    @property
    def trail(self) -> Trail:
        return Trail.MACHINE if self.identity_type == "machine" else Trail.HUMAN

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id, "campaign": self.campaign_id, "identity_type": self.identity_type,
            "identity": self.identity, "reviewers": list(self.reviewers), "status": self.status,
            "decision": self.decision, "note": self.note or None, "decided_by": self.decided_by,
            "decided_at": self.decided_at, "applied": self.applied,
            "escalated_at": self.escalated_at, "evidence": self.evidence,
        }  # fmt: skip


def _plain(value: Any) -> Any:
    """``value`` as JSON can keep it (times as ISO text)."""
    return json.loads(json.dumps(value, default=lambda v: v.isoformat() if isinstance(
        v, datetime) else str(v)))  # fmt: skip


class ReviewCampaigns:
    """Starts campaigns, records decisions and escalates overdue items."""

    def __init__(
        self,
        config: GatewayConfig,
        store: Store,
        audit: AuditLog,
        alerts: WebhookAlerts,
        users: UserDirectory,
        machines: MachineRegistry,
        revocations: MachineRevocations,
        entitlements: Entitlements,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._store = store
        self._audit = audit
        self._alerts = alerts
        self._users = users
        self._machines = machines
        self._revocations = revocations
        self._entitlements = entitlements
        self._effective = entitlements.effective
        self._clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # -- starting ----------------------------------------------------------------------

    def start(
        self, scope: str, due_at: datetime, *, actor: str, stale_days: int | None = None
    ) -> CampaignView:
        """Open a campaign with one item per identity of ``scope`` (offboarded NHIs and
        disabled people have nothing to review), each audited (``review.started``)."""
        if scope not in SCOPES:
            raise ReviewError(f"--of must be one of {', '.join(SCOPES)}")
        now = self._now()
        if due_at <= now:
            raise ReviewError("--due must be in the future")
        days = stale_days if stale_days is not None else self._config.reviews.stale_after_days
        check_days(days)
        since = now - timedelta(days=days)
        usage = self._entitlements.usage()
        grants = self._entitlements.active_grants(now)
        users = self._users.list_users() if scope in ("humans", "all") else []
        machines = self._machines.list() if scope in ("machines", "all") else []
        findings = stale_findings(config=self._config, users=users, machines=machines,
                                  usage=usage, days=days, now=now)  # fmt: skip
        items: list[tuple[str, str, list[str], dict[str, Any]]] = []
        for user in users:
            if user.disabled:
                continue
            reach = self._effective.human_paths(user, usage, now, grants)
            evidence: dict[str, Any] = {
                "paths": [p.record() for p in reach],
                "groups": list(user.groups),
                "last_used": usage.last_used("human", user.name),
                "findings": [f.record() for f in findings if f.identity == user.name
                             and f.kind in ("human", "key")],
                "suggestion": suggest_groups(user, usage, self._config, since).record(),
            }  # fmt: skip
            items.append(("human", user.name, self._human_reviewers(user), evidence))
        for machine in machines:
            if machine.status == "offboarded":
                continue
            evidence = {
                "paths": [p.record() for p in self._effective.machine_paths(machine, usage)],
                "status": machine.status, "owner": machine.owner,
                "tech_owner": machine.tech_owner, "purpose": machine.purpose,
                "last_used": usage.last_used("machine", machine.name),
                "findings": [f.record() for f in findings if f.identity == machine.name
                             and f.kind != "rule"],
                "suggestion": suggest_scope(machine, usage, since).record(),
            }  # fmt: skip
            items.append(("machine", machine.name, self._machine_reviewers(machine), evidence))
        if not items:
            raise ReviewError(f"there is nothing to review ({scope}): no identities")
        records: list[AuditRecord] = []
        with self._store.transaction() as db:
            campaign = ReviewCampaign(scope=scope, due_at=due_at, created_by=str(actor),
                                      created_at=now, stale_days=days)  # fmt: skip
            db.add(campaign)
            db.flush()
            for identity_type, identity, reviewers, evidence in items:
                row = ReviewItem(
                    campaign_id=campaign.id, identity_type=identity_type, identity=identity,
                    reviewers=reviewers, status="pending", evidence=_plain(evidence), note="",
                )  # fmt: skip
                db.add(row)
                db.flush()
                records.append(self._audit.append(db, _trail(identity_type), AuditEvent(
                    actor=actor, actor_type=ActorType.ADMIN, action="review.started",
                    target=_subject(identity_type, identity), authority=_authority(actor),
                    details={"campaign": campaign.id, "item": row.id, "due_at": due_at.isoformat(),
                             "reviewers": reviewers,
                             "paths": len(evidence["paths"]),
                             "findings": len(evidence["findings"])},
                )))  # fmt: skip
            campaign_id = campaign.id
        for record in records:
            self._audit.committed(record)
        return self.campaign(campaign_id)

    def _machine_reviewers(self, machine: MachineView) -> list[str]:
        reviewers: list[str] = []
        for owner in (machine.owner, machine.tech_owner):
            if NAME_RE.fullmatch(owner):
                reviewers += [owner, f"group:{owner}"]
        reviewers += [f"group:{g}" for g in self._config.reviews.reviewer_groups]
        return list(dict.fromkeys(reviewers))

    def _human_reviewers(self, user: UserView) -> list[str]:
        managers = self._config.reviews.manager_groups
        reviewers = [f"group:{managers[g]}" for g in user.groups if g in managers]
        reviewers += [f"group:{g}" for g in self._config.reviews.reviewer_groups]
        return list(dict.fromkeys(reviewers))

    # -- reading -----------------------------------------------------------------------

    def campaigns(self) -> list[CampaignView]:
        """Every campaign, newest first, with its items counted by status."""
        with self._store.transaction(write=False) as db:
            rows = db.scalars(select(ReviewCampaign).order_by(ReviewCampaign.id.desc())).all()
            counts: dict[int, dict[str, int]] = {}
            for campaign_id, status, number in db.execute(
                select(ReviewItem.campaign_id, ReviewItem.status, func.count()).group_by(
                    ReviewItem.campaign_id, ReviewItem.status
                )
            ):
                counts.setdefault(campaign_id, {})[status] = number
            return [_campaign_view(row, counts.get(row.id, {})) for row in rows]

    def campaign(self, campaign_id: int) -> CampaignView:
        for campaign in self.campaigns():
            if campaign.id == campaign_id:
                return campaign
        raise ReviewError(f"no review campaign #{campaign_id}")

    def items(
        self, campaign_id: int | None = None, *, pending_only: bool = False
    ) -> list[ItemView]:
        """Items (of one campaign), by id."""
        query = select(ReviewItem).order_by(ReviewItem.id)
        if campaign_id is not None:
            self.campaign(campaign_id)
            query = query.where(ReviewItem.campaign_id == campaign_id)
        if pending_only:
            query = query.where(ReviewItem.status.in_(("pending", "escalated")))
        with self._store.transaction(write=False) as db:
            return [_item_view(row) for row in db.scalars(query)]

    def item(self, item_id: int) -> ItemView:
        with self._store.transaction(write=False) as db:
            row = db.get(ReviewItem, item_id)
            if row is None:
                raise ReviewError(f"no review item #{item_id}")
            return _item_view(row)

    @staticmethod
    def may_decide(item: ItemView, reviewer: UserView) -> str | None:
        """Why ``reviewer`` may not decide ``item`` (a sentence), or None if they may."""
        if item.identity_type == "human" and item.identity == reviewer.name:
            return f"item #{item.id} is about you: nobody reviews their own access"
        if reviewer.name in item.reviewers or any(
            f"group:{group}" in item.reviewers for group in reviewer.groups
        ):
            return None
        return (
            f"you are not a reviewer of item #{item.id} ({item.identity}): its reviewers are "
            f"{', '.join(item.reviewers)}"
        )

    # -- deciding ----------------------------------------------------------------------

    def decide(
        self, item_id: int, decision: str, note: str, *, reviewer: UserView, actor: str
    ) -> ItemView:
        """Record ``reviewer``'s decision on an item and carry it out; ReviewError (nothing
        changed) for a decision already made, a reviewer who may not, no note, or a
        ``narrow`` with nothing narrower to apply."""
        if decision not in DECISIONS:
            raise ReviewError(f"the decision must be one of {', '.join(DECISIONS)}")
        if not note.strip():
            raise ReviewError("a decision needs --note: why, for the auditors")
        item = self.item(item_id)
        if item.status == "decided":
            raise ReviewError(f"item #{item.id} was decided already by {item.decided_by}")
        refusal = self.may_decide(item, reviewer)
        if refusal is not None:
            self._audit.record(item.trail, AuditEvent(
                actor=actor, actor_type=ActorType.ADMIN, action="review.refused",
                outcome="refused", target=_subject(item.identity_type, item.identity),
                reason=refusal, details={"campaign": item.campaign_id, "item": item.id,
                                         "decision": decision},
            ))  # fmt: skip
            raise ReviewError(refusal)
        # Claimed before anything changes, so two reviewers deciding at once act once.
        with self._store.transaction() as db:
            row = db.get(ReviewItem, item.id, with_for_update=True)
            assert row is not None
            if row.status not in ("pending", "escalated"):
                raise ReviewError(f"item #{item.id} is being decided or was decided already")
            previous, row.status = row.status, "deciding"
        try:
            applied = self._apply(item, decision, note, actor)
        except BaseException:
            with self._store.transaction() as db:
                row = db.get(ReviewItem, item.id, with_for_update=True)
                assert row is not None
                row.status = previous
            raise
        now = self._now()
        with self._store.transaction() as db:
            row = db.get(ReviewItem, item.id, with_for_update=True)
            assert row is not None
            row.status, row.decision, row.note = "decided", decision, note.strip()
            row.decided_by, row.decided_at, row.applied = reviewer.name, now, _plain(applied)
            record = self._audit.append(db, item.trail, AuditEvent(
                actor=actor, actor_type=ActorType.ADMIN, action="review.decided",
                target=_subject(item.identity_type, item.identity), reason=note.strip(),
                authority=_authority(actor),
                details={"campaign": item.campaign_id, "item": item.id, "decision": decision,
                         "applied": _plain(applied), "mfa": True,
                         "evidence_paths": len(item.evidence.get("paths", []))},
            ))  # fmt: skip
            view = _item_view(row)
        self._audit.committed(record)
        return view

    def _apply(self, item: ItemView, decision: str, note: str, actor: str) -> dict[str, Any]:
        """Carry out a decision (each change audited by the service that makes it)."""
        reason = f"review item #{item.id}: {note.strip()}"
        if decision == "keep":
            return {}
        if item.identity_type == "machine":
            if decision == "narrow":
                suggestion = ScopeSuggestion.from_record(item.evidence["suggestion"])
                if not suggestion.narrowable:
                    raise ReviewError(
                        f"item #{item.id}: there is no narrower scope to apply "
                        "(it used nothing, or everything): keep, suspend or offboard"
                    )
                self._machines.narrow_scope(
                    item.identity, actor=actor, targets=suggestion.targets,
                    commands=suggestion.commands, sources=suggestion.sources,
                    allow_pty=suggestion.allow_pty, allow_sftp=suggestion.allow_sftp,
                    reason=reason,
                )  # fmt: skip
                return {"scope": suggestion.record()}
            if decision == "suspend":
                if self._machines.get(item.identity).status != "suspended":
                    self._machines.set_status(item.identity, "suspended", actor=actor,
                                              reason=reason)  # fmt: skip
                return {"status": "suspended"}
            revoked = self._revocations.offboard(item.identity, actor=actor, reason=reason)
            return {"status": "offboarded", "revoked": len(revoked)}
        if decision == "narrow":
            groups = item.evidence["suggestion"]
            if not groups.get("narrowable"):
                raise ReviewError(f"item #{item.id}: no group to remove: keep or suspend")
            self._users.set_groups(item.identity, groups["groups"], actor=actor)
            return {"groups": groups["groups"]}
        user = self._users.get(item.identity)
        if user is not None and not user.disabled:
            self._users.set_disabled(item.identity, True, actor=actor)
        if decision == "offboard":
            self._users.set_groups(item.identity, [], actor=actor)
            return {"disabled": True, "groups": []}
        return {"disabled": True}

    # -- escalation --------------------------------------------------------------------

    def escalate_overdue(self) -> list[ItemView]:
        """Escalate every pending item whose campaign is past due: audited, announced by
        webhook, and with ``[reviews] suspend_overdue`` its identity suspended or disabled.
        Items escalated once are not escalated again."""
        now = self._now()
        with self._store.transaction(write=False) as db:
            due = db.scalars(
                select(ReviewItem).join(ReviewCampaign, ReviewCampaign.id == ReviewItem.campaign_id)
                .where(ReviewItem.status == "pending", ReviewCampaign.due_at < now)
                .order_by(ReviewItem.id)
            ).all()  # fmt: skip
            overdue = [_item_view(row) for row in due]
        escalated = []
        suspend = self._config.reviews.suspend_overdue
        for item in overdue:
            # Claimed first, so that of several nodes escalating at once only one acts.
            with self._store.transaction() as db:
                row = db.get(ReviewItem, item.id, with_for_update=True)
                if row is None or row.status != "pending":
                    continue
                row.status, row.escalated_at = "escalated", now
                record = self._audit.append(db, item.trail, AuditEvent(
                    actor=ESCALATION_ACTOR, actor_type=ActorType.GATEWAY,
                    action="review.escalated", outcome="success",
                    target=_subject(item.identity_type, item.identity),
                    reason="not decided by the due date", authority=f"review:{item.campaign_id}",
                    details={"campaign": item.campaign_id, "item": item.id,
                             "reviewers": list(item.reviewers), "suspend_overdue": suspend},
                ))  # fmt: skip
                view = _item_view(row)
            self._audit.committed(record)
            suspended = False
            if suspend:
                actor = ActingOperator(ESCALATION_ACTOR, authority=f"review:{item.campaign_id}")
                try:
                    suspended = self._suspend(item, actor)
                except PamgateError as exc:  # changed meanwhile; the alert says so
                    logger.warning("review item #%d: cannot suspend %s: %s", item.id,
                                   item.identity, exc)  # fmt: skip
            self._alerts.send(
                "review.overdue",
                {"campaign": item.campaign_id, "item": item.id, "identity": item.identity,
                 "identity_type": item.identity_type, "reviewers": list(item.reviewers),
                 "due_at": item.evidence.get("due_at"), "suspended": suspended},
                authority=f"review:{item.campaign_id}", trail=item.trail,
            )  # fmt: skip
            escalated.append(view)
        return escalated

    def _suspend(self, item: ItemView, actor: ActingOperator) -> bool:
        reason = f"review item #{item.id} was not decided by its due date"
        if item.identity_type == "machine":
            if self._machines.get(item.identity).status != "active":
                return False
            self._machines.set_status(item.identity, "suspended", actor=actor, reason=reason)
            return True
        user = self._users.get(item.identity)
        if user is None or user.disabled:
            return False
        self._users.set_disabled(item.identity, True, actor=actor)
        return True


def _trail(identity_type: str) -> Trail:
    return Trail.MACHINE if identity_type == "machine" else Trail.HUMAN


def _subject(identity_type: str, identity: str) -> str:
    return f"nhi:{identity}" if identity_type == "machine" else identity


def _authority(actor: str) -> str:
    return admin_authority(actor)


def _campaign_view(row: ReviewCampaign, counts: dict[str, int]) -> CampaignView:
    return CampaignView(row.id, row.scope, row.due_at, row.created_by, row.created_at,
                        row.stale_days, dict(counts))  # fmt: skip


def _item_view(row: ReviewItem) -> ItemView:
    return ItemView(
        id=row.id, campaign_id=row.campaign_id, identity_type=row.identity_type,
        identity=row.identity, reviewers=tuple(row.reviewers), status=row.status,
        evidence=dict(row.evidence), decision=row.decision, note=row.note or "",
        decided_by=row.decided_by, decided_at=row.decided_at,
        applied=dict(row.applied) if row.applied is not None else None,
        escalated_at=row.escalated_at,
    )  # fmt: skip
