"""Operator actions on entitlements: the access report, stale and excessive access, narrower
scopes, and review campaigns. Reading needs the auditor or admin role; starting a campaign
and escalating overdue items needs admin; deciding an item needs a role and being one of the
item's reviewers (the campaign's rule), as a pamgate user who signed in with MFA, never on
an item about oneself."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.domain.operators.core import OperatorCore
from gateway.domain.operators.roles import ALL_ROLES, CHANGE, READ_TRAILS, RoleMissing

if TYPE_CHECKING:  # the entitlement services use the roles: imported for their types only
    from datetime import datetime

    from gateway.domain.entitlements.campaigns import CampaignView, ItemView
    from gateway.domain.entitlements.effective import AccessPath
    from gateway.domain.entitlements.stale import Finding
    from gateway.domain.entitlements.suggest import GroupSuggestion, ScopeSuggestion


class ReviewActions(OperatorCore):
    """The access report and review campaigns (see :class:`OperatorCore`)."""

    def access_report(
        self, *, identity: str | None = None, target: str | None = None
    ) -> list[AccessPath]:
        """Who can reach what now, through what, and when it was last used. Auditor or admin."""
        self.require(READ_TRAILS, "read the access report")
        return self._services.entitlements.report(identity=identity, target=target)

    def stale_access(self, days: int) -> list[Finding]:
        """Stale and excessive access over ``days`` days. Auditor or admin."""
        self.require(READ_TRAILS, "read the access report")
        return self._services.entitlements.stale(days)

    def suggest_scope(self, nhi: str, days: int) -> ScopeSuggestion:
        """An NHI's scope narrowed to its use. Auditor or admin."""
        self.require(READ_TRAILS, "read the access report")
        return self._services.entitlements.suggest_machine(nhi, days)

    def suggest_groups(self, user: str, days: int) -> GroupSuggestion:
        """A person's groups without those they did not use. Auditor or admin."""
        self.require(READ_TRAILS, "read the access report")
        return self._services.entitlements.suggest_user(user, days)

    def start_review(self, scope: str, due_at: datetime, stale_days: int | None) -> CampaignView:
        """Open a review campaign. Admin."""
        actor = self._acting(CHANGE, "start review campaigns")
        return self._services.reviews.start(scope, due_at, actor=actor, stale_days=stale_days)

    def review_campaigns(self) -> list[CampaignView]:
        """Every campaign. Any role (reviewers need to find theirs)."""
        self.require(ALL_ROLES, "see review campaigns")
        return self._services.reviews.campaigns()

    def review_items(self, campaign_id: int | None, *, pending_only: bool) -> list[ItemView]:
        """A campaign's items: all of them for an auditor or admin; for anyone else with a
        role, those they may decide (the evidence is about other people's access)."""
        operator = self.require(ALL_ROLES, "see review campaigns")
        items = self._services.reviews.items(campaign_id, pending_only=pending_only)
        if operator.roles & READ_TRAILS:
            return items
        return [item for item in items if self._may_decide(item)]

    def review_item(self, item_id: int) -> ItemView:
        """One item and its evidence: for an auditor or admin, or one of its reviewers."""
        operator = self.require(ALL_ROLES, "see review campaigns")
        item = self._services.reviews.item(item_id)
        if operator.roles & READ_TRAILS or self._may_decide(item):
            return item
        raise RoleMissing(
            f"You need the admin or auditor role, or to be one of its reviewers, to see "
            f"review item #{item_id}."
        )

    def _may_decide(self, item: ItemView) -> bool:
        reviewer = self._services.users.get(self.name)
        return reviewer is not None and self._services.reviews.may_decide(item, reviewer) is None

    def decide_review(self, item_id: int, decision: str, note: str) -> ItemView:
        """Decide a review item and carry the decision out. A pamgate user with a role who is
        one of the item's reviewers, never on their own access (the local administrator
        decides nothing: a decision is a person's, signed in with MFA)."""
        if self.operator.local:
            raise RoleMissing(
                "review decisions are made by a pamgate user signed in with MFA: "
                "use --as USER (or ssh USER:admin@GATEWAY)"
            )
        actor = self._acting(ALL_ROLES, "decide review items")
        reviewer = self._services.users.get(self.name)
        assert reviewer is not None  # _acting found them enabled a moment ago
        return self._services.reviews.decide(
            item_id, decision, note, reviewer=reviewer, actor=actor
        )

    def escalate_reviews(self) -> list[ItemView]:
        """Escalate overdue items now (``serve`` does it every minute). Admin."""
        self._acting(CHANGE, "escalate review items")
        return self._services.reviews.escalate_overdue()
