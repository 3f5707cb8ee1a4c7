"""Admission: from an authenticated login to a destination the session may use.

It settles the target (from the login name, or the in-terminal menu), asks
the policy, and under an ``approval`` rule obtains a grant: an existing
one, or a request the user waits on (with break-glass as the way out for
eligible users). The relay calls :meth:`Admission.settle` and connects to
whatever comes back. Talking to the user goes through
:class:`~gateway.ssh.dialog.TerminalDialog`; the decisions are the domain
services'.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from gateway.config import RuleSettings
from gateway.domain.access import ApprovalRequired, Destination, parse_login_name
from gateway.domain.approvals import GrantView, RequestView
from gateway.domain.breakglass import BreakGlassError
from gateway.errors import AccessDenied, DestinationError
from gateway.services import GatewayServices
from gateway.ssh.dialog import TerminalDialog
from gateway.ssh.menu import TargetMenu

if TYPE_CHECKING:
    from gateway.ssh.human.session import SessionContext


class Admission:
    """Settles one session's destination, waiting for approval when the policy says so."""

    def __init__(
        self,
        services: GatewayServices,
        context: SessionContext,
        dialog: TerminalDialog,
        *,
        pty: bool,
    ) -> None:
        self._services = services
        self._ctx = context
        self._dialog = dialog
        self._pty = pty

    async def settle(self) -> Destination | None:
        """The destination to connect to, or None if the user gave up (or left)."""
        login = parse_login_name(self._ctx.login_name)
        user = self._ctx.user
        access = self._services.access
        target, account = login.target, login.account
        if target is None:
            reachable = access.reachable_targets(user.name, user.groups)
            if not self._pty:
                names = ", ".join(t.name for t in reachable) or "none"
                raise DestinationError(
                    f"no target given: log in as {user.name}:TARGET "
                    f"(or {user.name}:ACCOUNT@TARGET). Targets you may reach: {names}"
                )
            menu = TargetMenu(reachable)
            text = menu.render()
            while True:
                choice = await self._dialog.choose_target(menu, text)
                if choice is None:
                    return None
                try:
                    return await self._authorize(choice.target, choice.account)
                except DestinationError as exc:
                    # A typo in the menu costs a re-prompt, not a new login.
                    text = f"{exc}\r\n{TargetMenu.PROMPT}"
        return await self._authorize(target, account)

    async def _authorize(self, target: str, account: str | None) -> Destination | None:
        """The policy's destination; under an approval rule, a grant (waiting for one)."""
        user = self._ctx.user
        try:
            return self._services.access.authorize(
                user.name,
                user.groups,
                target,
                account,
                source=self._ctx.source,
                at=datetime.now(UTC),
            )
        except ApprovalRequired as needed:
            return await self._obtain_grant(needed)

    async def _obtain_grant(self, needed: ApprovalRequired) -> Destination | None:
        requests = self._services.requests
        destination, rule = needed.destination, needed.decision.rule
        assert rule is not None
        target, account = destination.target.name, destination.account
        user = self._ctx.user.name
        grant = await asyncio.to_thread(requests.active_grant, user, target, account)
        if grant is None:
            reason = ""
            if rule.reason_required:
                if not self._pty:
                    raise DestinationError(
                        f"{needed}; a reason is required: connect with a terminal (ssh -t) "
                        "to give one"
                    )
                while not reason:
                    answer = await self._dialog.read_line(
                        f"Reason for access to {account}@{target}: "
                    )
                    if answer is None:
                        return None
                    reason = answer.strip()
            request = await asyncio.to_thread(
                requests.create, user=user, target=target, account=account, rule=rule,
                reason=reason, source=self._ctx.source,
            )  # fmt: skip
            can_break_glass = rule.break_glass and self._pty
            self._dialog.say(
                f"Request #{request.id} for {target} ({account}) is waiting for approval by "
                f"{', '.join(request.approver_groups)} ({request.approvals_required} needed)... "
                + ("Press b for break-glass, " if can_break_glass else "")
                + "Ctrl-C cancels."
            )
            decided = await self._dialog.wait_for(
                lambda: self._decision(request.id),
                hotkeys={ord("b"): "breakglass"} if can_break_glass else None,
            )
            if decided == "breakglass":
                await asyncio.to_thread(requests.cancel, request.id, user)
                grant = await self._break_glass(destination, rule)
                if grant is None:
                    return None
                return dataclasses.replace(destination, authority=grant.authority, grant=grant)
            if decided is None:
                await asyncio.to_thread(requests.cancel, request.id, user)
                self._dialog.say(f"request #{request.id} cancelled")
                return None
            if decided.status != "approved" or decided.grant_id is None:
                by = f" by {decided.decided_by}" if decided.decided_by else ""
                comment = f": {decided.comment}" if decided.comment else ""
                raise AccessDenied(f"request #{request.id} was {decided.status}{by}{comment}")
            grant = await asyncio.to_thread(requests.grant, decided.grant_id)
            self._dialog.say(f"request #{request.id} approved by {', '.join(decided.approvals)}")
        self._dialog.say(f"access under {grant.authority} until {grant.ends_at:%H:%M:%S} UTC")
        return dataclasses.replace(destination, authority=grant.authority, grant=grant)

    async def _break_glass(self, destination: Destination, rule: RuleSettings) -> GrantView | None:
        """Ask for a justification and invoke break-glass; None if the user gives up."""
        minimum = self._services.config.approvals.break_glass_min_justification
        while True:
            justification = await self._dialog.read_line(
                f"Break-glass justification (at least {minimum} characters): "
            )
            if justification is None:
                return None
            try:
                case, grant = await asyncio.to_thread(
                    self._services.breakglass.invoke, user=self._ctx.user.name,
                    target=destination.target.name, account=destination.account, rule=rule,
                    justification=justification, source=self._ctx.source,
                )  # fmt: skip
            except BreakGlassError as exc:
                self._dialog.say(str(exc))
                continue
            self._dialog.say(
                f"BREAK-GLASS #{case.id}: access until {grant.ends_at:%H:%M:%S} UTC; announced, "
                "recorded and flagged for review"
            )
            return grant

    async def _decision(self, request_id: int) -> RequestView | None:
        view = await asyncio.to_thread(self._services.requests.get, request_id)
        return None if view.status == "pending" else view
