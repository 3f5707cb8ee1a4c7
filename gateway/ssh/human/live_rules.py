"""What ends a live human session or forward: the same judgement as the one that let it start.

A human's session or ``ssh -L`` forward ends when its grant ends (users are
warned 5 and 1 minutes before) or is revoked, when its user is disabled or
the login certificate its connection signed in with is revoked, and
when the access decision, asked again each second with the user's current
groups and the current time, no longer allows it (groups changed, a rule's
hours passed). A console or admin session over SSH ends when its user no
longer holds a console role. The lane's watch (:mod:`gateway.ssh.watch`) reads what changed
for every live session in one round; these rules say what it means for one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from gateway.config import GatewayConfig
from gateway.domain.access import AccessDecisions, Allowed
from gateway.domain.approvals import GrantView
from gateway.domain.live_checks import LiveChecks, WatchSubject
from gateway.domain.operators import roles_for

#: Seconds before a grant ends at which the user is warned.
GRANT_WARNINGS = (300, 60)


class HumanLiveRules:
    """The live checks of one human session or forward (see the module docstring)."""

    def __init__(
        self, access: AccessDecisions, user: str, source: str, *,
        login_certificate: int | None = None,
    ) -> None:  # fmt: skip
        self._access = access
        self._user = user
        self._source = source
        #: The serial of the login certificate the connection signed in with, if any.
        self._login_certificate = login_certificate
        self._target: str | None = None
        self._account: str | None = None
        #: The grant the access runs under, once admission has settled it.
        self.grant: GrantView | None = None
        self._console: GatewayConfig | None = None
        self._warned: set[int] = set()

    def admitted(self, allowed: Allowed) -> None:
        """Admission settled the access: from now on it is checked as it was decided."""
        self._target, self._account = allowed.target.name, allowed.account
        self.grant = allowed.grant

    def admitted_operator(self, config: GatewayConfig) -> None:
        """The session is the console or an admin command: it lasts while the user holds a
        console role (``[console]`` groups, or a rule's approver groups)."""
        self._console = config

    def subject(self, session_id: str | None) -> WatchSubject:
        grant_id = self.grant.id if self.grant is not None else None
        return WatchSubject(
            session_id=session_id, user=self._user, grant_id=grant_id,
            login_certificate=self._login_certificate,
        )  # fmt: skip

    def check_time(self, tell_user: Callable[[str], None]) -> str | None:
        """A grant's end (on the event loop, each second), with warnings before it."""
        grant = self.grant
        if grant is None:
            return None
        left = (grant.ends_at - datetime.now(UTC)).total_seconds()
        if left <= 0:
            return f"grant #{grant.id} has ended"
        total = (grant.ends_at - grant.starts_at).total_seconds()
        for mark in GRANT_WARNINGS:
            if left <= mark < total and mark not in self._warned:
                self._warned.add(mark)
                tell_user(f"access under grant #{grant.id} ends in {mark // 60} min")
        return None

    def revoked_because(self, checks: LiveChecks) -> str | None:
        """Why the access must end given what changed (off the event loop), or None."""
        if self._user in checks.disabled_users:
            return f"user {self._user} was disabled"
        serial = self._login_certificate
        if serial is not None and serial in checks.revoked_login_certificates:
            why = checks.revoked_login_certificates[serial]
            return f"the login certificate this connection signed in with was revoked ({why})"
        if self.grant is not None and self.grant.id in checks.revoked_grants:
            reason = checks.revoked_grants[self.grant.id]
            return f"grant #{self.grant.id} was revoked ({reason})"
        user = checks.enabled_users.get(self._user)
        if user is not None and self._console is not None:
            if roles_for(user.groups, self._console):
                return None
            return f"{self._user} no longer has a console role"
        if user is None or self._target is None or self._account is None:
            return None
        denied = self._access.still_allowed(
            user, self._target, self._account, source=self._source, at=datetime.now(UTC),
            grant=self.grant,
        )  # fmt: skip
        return f"access is no longer allowed: {denied.reason}" if denied else None
