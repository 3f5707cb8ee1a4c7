"""Break-glass: immediate, short, loudly announced access, reviewed afterwards.

An eligible user (their rule has ``break_glass = true``) who has passed full
MFA may skip the wait with a written justification. They get at once a
short grant (the rule's ``break_glass_max_duration``) marked as an
exception; the alert goes out (log line and webhooks) without waiting for
anyone; and a review case opens. Someone else, in a reviewer group, must
later record a verdict: justified or unjustified. Cases not reviewed in
time are overdue.

Every step is in the human audit trail with ``breakglass:N`` as authority.
Plain Python over the store; no sockets (the alerts go out through
:class:`~gateway.domain.alerts.WebhookAlerts`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from gateway.config import ApprovalSettings, RuleSettings, duration_seconds
from gateway.domain.alerts import WebhookAlerts
from gateway.domain.approvals import GrantView, grant_view
from gateway.domain.audit.trail import ActorType, AuditEvent, AuditLog, Trail
from gateway.errors import PamgateError
from gateway.store.database import Store
from gateway.store.models import AccessGrant, BreakGlassCase, User

VERDICTS = ("justified", "unjustified")


class BreakGlassError(PamgateError):
    """Break-glass cannot be invoked or reviewed as asked (and nothing changed)."""


@dataclass(frozen=True)
class CaseView:
    """A break-glass case as reviewers see it."""

    id: int
    user: str
    target: str
    account: str
    justification: str
    grant_id: int
    created_at: datetime
    review_due_at: datetime
    reviewed_by: str | None
    verdict: str | None
    note: str

    @property
    def authority(self) -> str:
        return f"breakglass:{self.id}"

    def overdue(self, now: datetime) -> bool:
        return self.verdict is None and now > self.review_due_at


class BreakGlass:
    """Invokes break-glass and records its review."""

    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        alerts: WebhookAlerts,
        settings: ApprovalSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._audit = audit
        self._alerts = alerts
        self._settings = settings
        self._clock = clock

    def invoke(
        self,
        *,
        user: str,
        target: str,
        account: str,
        rule: RuleSettings,
        justification: str,
        source: str,
    ) -> tuple[CaseView, GrantView]:
        """Open a break-glass grant and review case, and sound the alert."""
        justification = " ".join(justification.split())
        if not rule.break_glass:
            raise BreakGlassError(f"rule {rule.id!r} does not allow break-glass")
        minimum = self._settings.break_glass_min_justification
        if len(justification) < minimum:
            raise BreakGlassError(
                f"break-glass needs a justification of at least {minimum} characters"
            )
        now = self._now()
        with self._store.transaction() as db:
            grant = AccessGrant(
                user=user, target=target, account=account, rule_id=rule.id, request_id=None,
                kind="break-glass", starts_at=now,
                ends_at=now + timedelta(seconds=duration_seconds(rule.break_glass_max_duration)),
                revoke_reason="",
            )  # fmt: skip
            db.add(grant)
            db.flush()
            case = BreakGlassCase(
                user=user, target=target, account=account, rule_id=rule.id,
                justification=justification[:2000], grant_id=grant.id, source=source,
                created_at=now,
                review_due_at=now + timedelta(
                    seconds=duration_seconds(self._settings.break_glass_review_within)
                ),
                note="",
            )  # fmt: skip
            db.add(case)
            db.flush()
            grant.exception_id = case.id
            record = self._audit.append(db, Trail.HUMAN, AuditEvent(
                actor=user, actor_type=ActorType.HUMAN, action="breakglass.invoked",
                target=target, account=account, source=source, reason=justification,
                authority=f"breakglass:{case.id}",
                details={"grant": grant.id, "ends_at": grant.ends_at.isoformat(), "rule": rule.id},
            ))  # fmt: skip
            view, granted = _case_view(case), grant_view(grant)
        self._audit.committed(record)
        self._alerts.send(
            "breakglass.invoked",
            {"case": view.id, "user": user, "target": target, "account": account,
             "justification": justification, "grant": granted.id,
             "until": granted.ends_at.isoformat(), "source": source},
            authority=view.authority,
        )  # fmt: skip
        return view, granted

    def list(self, *, unreviewed: bool = False, overdue: bool = False) -> list[CaseView]:
        """Cases, unreviewed first, then newest first."""
        with self._store.transaction(write=False) as db:
            cases = [_case_view(c) for c in db.scalars(select(BreakGlassCase))]
        now = self._now()
        if unreviewed:
            cases = [c for c in cases if c.verdict is None]
        if overdue:
            cases = [c for c in cases if c.overdue(now)]
        return sorted(cases, key=lambda c: (c.verdict is not None, -c.id))

    def review(self, case_id: int, reviewer: str, verdict: str, note: str) -> CaseView:
        """Record a verdict; only someone else, in a reviewer group, may.

        A refused attempt is audited before the BreakGlassError reaches the caller.
        """
        try:
            return self._review(case_id, reviewer, verdict, note)
        except BreakGlassError as exc:
            self._audit.record(Trail.HUMAN, AuditEvent(
                actor=reviewer, actor_type=ActorType.HUMAN, action="breakglass.review_refused",
                outcome="refused", reason=str(exc), authority=f"breakglass:{case_id}",
                details={"verdict": verdict},
            ))  # fmt: skip
            raise

    def get(self, case_id: int) -> CaseView:
        """One case; BreakGlassError if there is none."""
        with self._store.transaction(write=False) as db:
            case = db.get(BreakGlassCase, case_id)
            if case is None:
                raise BreakGlassError(f"no break-glass case #{case_id}")
            return _case_view(case)

    def _review(self, case_id: int, reviewer: str, verdict: str, note: str) -> CaseView:
        if verdict not in VERDICTS:
            raise BreakGlassError(f"verdict must be one of {', '.join(VERDICTS)}")
        if len(note.strip()) < 3:
            raise BreakGlassError("a review needs a note")
        with self._store.transaction() as db:
            case = db.get(BreakGlassCase, case_id, with_for_update=True)
            if case is None:
                raise BreakGlassError(f"no break-glass case #{case_id}")
            if case.verdict is not None:
                raise BreakGlassError(f"case #{case_id} was reviewed already by {case.reviewed_by}")
            if reviewer == case.user:
                raise BreakGlassError("you cannot review your own break-glass use")
            person = db.scalar(select(User).where(User.name == reviewer))
            if person is None or person.disabled:
                raise BreakGlassError(f"{reviewer} is not an enabled user")
            groups = self._settings.reviewer_groups
            if not set(person.groups or []) & set(groups):
                raise BreakGlassError(
                    f"{reviewer} is not in a reviewer group ({', '.join(groups)})"
                )
            case.verdict, case.note = verdict, note.strip()
            case.reviewed_by, case.reviewed_at = reviewer, self._now()
            record = self._audit.append(db, Trail.HUMAN, AuditEvent(
                actor=reviewer, actor_type=ActorType.HUMAN, action="breakglass.reviewed",
                target=case.target, account=case.account, reason=case.note,
                authority=f"breakglass:{case.id}",
                details={"verdict": verdict, "user": case.user},
            ))  # fmt: skip
            view = _case_view(case)
        self._audit.committed(record)
        return view

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)


def _case_view(case: BreakGlassCase) -> CaseView:
    return CaseView(
        id=case.id, user=case.user, target=case.target, account=case.account,
        justification=case.justification, grant_id=case.grant_id, created_at=case.created_at,
        review_due_at=case.review_due_at, reviewed_by=case.reviewed_by, verdict=case.verdict,
        note=case.note,
    )  # fmt: skip
