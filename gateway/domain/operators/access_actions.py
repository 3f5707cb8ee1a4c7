"""Operator actions on access: requests and their decisions, grants, live sessions,
break-glass cases and the policy's answer. The roles each needs are in its docstring."""

from __future__ import annotations

from datetime import datetime

from gateway.domain.access import AccessDecision
from gateway.domain.approvals import GrantView, RequestView
from gateway.domain.breakglass import CaseView
from gateway.domain.operators.core import OperatorCore
from gateway.domain.operators.roles import (
    CHANGE,
    DECIDE_REQUESTS,
    REVIEW_BREAKGLASS,
    SEE_BREAKGLASS,
    SEE_IDENTITIES,
    SEE_REQUESTS,
    SEE_SESSIONS,
)
from gateway.domain.sessions import LiveSession
from gateway.errors import UnknownUser


class AccessActions(OperatorCore):
    """Requests, grants, sessions, break-glass and policy checks (see :class:`OperatorCore`)."""

    # -- requests ------------------------------------------------------------------

    def pending_requests(self) -> list[RequestView]:
        """Pending requests, oldest first. Approver, auditor or admin."""
        self.require(SEE_REQUESTS, "see requests")
        return list(reversed(self._services.requests.list(pending_only=True)))

    def recent_decisions(self, limit: int = 15) -> list[RequestView]:
        """Requests decided lately (approved, denied, expired, cancelled), newest first.
        Approver, auditor or admin."""
        self.require(SEE_REQUESTS, "see requests")
        decided = self._services.requests.list(limit=40)
        return [request for request in decided if request.status != "pending"][:limit]

    def requests(self, *, pending_only: bool, limit: int = 100) -> list[RequestView]:
        """Requests (only pending ones, or all), newest first. Approver, auditor or admin."""
        self.require(SEE_REQUESTS, "see requests")
        return self._services.requests.list(pending_only=pending_only, limit=limit)

    def request(self, request_id: int) -> RequestView:
        """One request. Approver, auditor or admin."""
        self.require(SEE_REQUESTS, "see requests")
        return self._services.requests.get(request_id)

    def approve(self, request_id: int, comment: str = "") -> RequestView:
        """Approve a request. Approver; and, as the requests service rules, in an approver
        group of the request's rule, and never for one's own request."""
        actor = self._acting(DECIDE_REQUESTS, "approve requests")
        return self._services.requests.approve(request_id, actor, comment)

    def deny(self, request_id: int, comment: str) -> RequestView:
        """Deny a request (one denial ends it). Approver, with the same rules as approving."""
        actor = self._acting(DECIDE_REQUESTS, "deny requests")
        return self._services.requests.deny(request_id, actor, comment)

    # -- grants ----------------------------------------------------------------------

    def grants(self, *, active_only: bool, limit: int = 100) -> list[GrantView]:
        """Grants (only current ones, or all), newest first. Approver, auditor or admin:
        a grant is what a decided request became."""
        self.require(SEE_REQUESTS, "see grants")
        return self._services.requests.list_grants(active_only=active_only, limit=limit)

    def revoke_grant(self, grant_id: int, reason: str) -> GrantView:
        """End a grant now; its sessions close within about 2 s. Admin."""
        actor = self._acting(CHANGE, "revoke grants")
        return self._services.requests.revoke(grant_id, actor, reason)

    def grant_behind(self, authority: str) -> int | None:
        """The grant behind a session's authority (``grant:N``, ``breakglass:N``), if any.
        Admin (it is asked for in order to revoke the grant)."""
        self.require(CHANGE, "revoke grants")
        kind, _, number = authority.partition(";")[0].partition(":")
        if not number.isdigit():
            return None
        if kind == "grant":
            return int(number)
        if kind == "breakglass":
            return self._services.breakglass.get(int(number)).grant_id
        return None

    # -- sessions ----------------------------------------------------------------------

    def live_sessions(self) -> list[LiveSession]:
        """Live sessions of both lanes. Auditor or admin."""
        self.require(SEE_SESSIONS, "see live sessions")
        return self._services.ledger.live()

    def session(self, session_id: str) -> LiveSession:
        """One session. Auditor or admin."""
        self.require(SEE_SESSIONS, "see sessions")
        return self._services.ledger.get(session_id)

    def sessions_under(self, authority: str) -> list[LiveSession]:
        """Sessions (live or ended) that ran under ``authority`` (``grant:N``,
        ``breakglass:N``). Approver, auditor or admin (break-glass reviewers open them)."""
        self.require(SEE_BREAKGLASS | SEE_SESSIONS, "see sessions")
        return self._services.ledger.with_authority(authority)

    def terminate_session(self, session_id: str, reason: str) -> None:
        """Ask for a live session to end; the user is shown ``reason``. Admin."""
        actor = self._acting(CHANGE, "terminate sessions")
        self._services.ledger.request_termination(session_id, actor=actor, reason=reason)

    # -- break-glass -----------------------------------------------------------------------

    def breakglass_cases(
        self, *, unreviewed: bool = False, overdue: bool = False
    ) -> list[CaseView]:
        """Break-glass cases, unreviewed first (only those, or only overdue ones, if asked).
        Approver, auditor or admin."""
        self.require(SEE_BREAKGLASS, "see break-glass cases")
        return self._services.breakglass.list(unreviewed=unreviewed, overdue=overdue)

    def breakglass_case(self, case_id: int) -> CaseView:
        """One break-glass case. Approver, auditor or admin."""
        self.require(SEE_BREAKGLASS, "see break-glass cases")
        return self._services.breakglass.get(case_id)

    def review_breakglass(self, case_id: int, verdict: str, note: str) -> CaseView:
        """Record a verdict on a case. Approver, auditor or admin; and, as the break-glass
        service rules, in a reviewer group, and never on one's own case."""
        actor = self._acting(REVIEW_BREAKGLASS, "review break-glass cases")
        return self._services.breakglass.review(case_id, actor, verdict, note)

    # -- the policy ------------------------------------------------------------------------

    def policy_decision(
        self, user: str, target: str, account: str | None, *, source: str, at: datetime
    ) -> AccessDecision:
        """What the access decision says for ``user`` reaching ``account@target`` from
        ``source`` at ``at`` (nothing is requested or recorded). Auditor or admin: it
        tells what a person may reach."""
        self.require(SEE_IDENTITIES, "check the policy")
        if self._services.users.get(user) is None:
            raise UnknownUser(f"no user named {user!r}")
        return self._services.access.decide(user, target, account, source=source, at=at)
