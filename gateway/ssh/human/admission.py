"""Admission on the human lane: from an authenticated login to an allowed destination.

It settles the target (from the login name, or the in-terminal menu), asks
the one access decision (:meth:`~gateway.domain.access.AccessDecisions.decide`)
and, when that says an approval is needed, opens a request and waits with the
user for the decision, with break-glass as the way out for eligible users.
After an approval or a break-glass the decision is asked again, so what
comes back is always an :class:`~gateway.domain.access.Allowed` from the
decision itself. Talking to the user goes through
:class:`~gateway.ssh.dialog.TerminalDialog`; the decisions are the domain
services'.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from gateway.domain.access import (
    Allowed,
    Denied,
    NeedsApproval,
    fresh_code_refusal,
    parse_login_name,
)
from gateway.domain.approvals import GrantView, RequestView
from gateway.domain.breakglass import BreakGlassError
from gateway.domain.identities import UserView
from gateway.domain.operators import roles_for
from gateway.errors import AccessDenied, DestinationError
from gateway.services import GatewayServices
from gateway.ssh.dialog import TerminalDialog
from gateway.ssh.menu import CONSOLE, TargetMenu


class Admission:
    """Settles one session's destination, waiting for approval when the policy says so."""

    def __init__(
        self,
        services: GatewayServices,
        user: UserView,
        login_name: str,
        source: str,
        dialog: TerminalDialog,
        *,
        pty: bool,
        fresh_code: bool = True,
    ) -> None:
        self._services = services
        #: Whether the connection signed in with a code (False: a login certificate alone).
        self._fresh_code = fresh_code
        self._user = user
        self._login_name = login_name
        self._source = source
        self._dialog = dialog
        self._pty = pty

    async def settle(self) -> Allowed | Literal["console"] | None:
        """The allowed destination, ``"console"`` if the user chose the console in the menu,
        or None if the user gave up (or left)."""
        login = parse_login_name(self._login_name)
        if login.target is not None:
            return await self._admit(login.target, login.account)
        reachable = self._services.access.reachable_targets(self._user)
        if not self._pty:
            names = ", ".join(t.name for t in reachable) or "none"
            name = self._user.name
            raise DestinationError(
                f"no target given: log in as {name}:TARGET "
                f"(or {name}:ACCOUNT@TARGET). Targets you may reach: {names}"
            )
        console = bool(roles_for(self._user.groups, self._services.config))
        menu = TargetMenu(reachable, console=console)
        text = menu.render()
        while True:
            choice = await self._dialog.choose_target(menu, text)
            if choice is None:
                return None
            if choice.target == CONSOLE:
                return "console"
            try:
                return await self._admit(choice.target, choice.account)
            except DestinationError as exc:
                # A typo in the menu costs a re-prompt, not a new login.
                text = f"{exc}\r\n{TargetMenu.PROMPT}"

    async def _decide(self, target: str, account: str | None) -> Allowed | NeedsApproval:
        decision = await self._services.executors.run_db(
            self._services.access.decide, self._user.name, target, account, source=self._source
        )
        if isinstance(decision, Denied):
            raise decision.error()
        refused = fresh_code_refusal(decision, fresh_code=self._fresh_code)
        if refused:
            raise AccessDenied(refused)
        return decision

    async def _admit(self, target: str, account: str | None) -> Allowed | None:
        """The decision's answer; under an approval rule, a grant first (waiting for one)."""
        decision = await self._decide(target, account)
        if isinstance(decision, NeedsApproval):
            if not await self._obtain_grant(decision):
                return None
            decision = await self._decide(target, account)
            if not isinstance(decision, Allowed):
                raise AccessDenied(decision.reason)
        if decision.grant is not None:
            self._dialog.say(
                f"access under {decision.authority} until {decision.grant.ends_at:%H:%M:%S} UTC"
            )
        return decision

    async def _obtain_grant(self, needed: NeedsApproval) -> bool:
        """Open a request and wait for its decision (or break glass); False if the user gave up."""
        requests, rule = self._services.requests, needed.rule
        target, account = needed.target.name, needed.account
        reason = ""
        if rule.reason_required:
            if not self._pty:
                raise DestinationError(
                    f"{needed.reason}; a reason is required: connect with a terminal (ssh -t) "
                    "to give one"
                )
            while not reason:
                answer = await self._dialog.read_line(f"Reason for access to {account}@{target}: ")
                if answer is None:
                    return False
                reason = answer.strip()
        user = self._user.name
        request = await self._services.executors.run_db(
            requests.create, user=user, target=target, account=account, rule=rule,
            reason=reason, source=self._source,
        )  # fmt: skip
        can_break_glass = needed.break_glass_allowed and self._pty
        # Woken when the decision is made, here or in another process (see
        # gateway.domain.wakeups); the check also runs every safety_poll_seconds.
        # Watching starts before the user is told to wait: from the message on, the
        # dialog must own the input at once, or a Ctrl-C typed then would be kept for
        # the session instead of cancelling.
        wakeups, woken = requests.wakeups, asyncio.Event()
        loop = asyncio.get_running_loop()

        def wake() -> None:
            loop.call_soon_threadsafe(woken.set)

        stop_watching = await self._services.executors.run_db(wakeups.watch, request.id, wake)
        try:
            self._dialog.say(
                f"Request #{request.id} for {target} ({account}) is waiting for approval by "
                f"{', '.join(request.approver_groups)} ({request.approvals_required} needed)... "
                + ("Press b for break-glass, " if can_break_glass else "")
                + "Ctrl-C cancels."
            )
            decided = await self._dialog.wait_for(
                lambda: self._decision(request.id),
                interval=wakeups.safety_poll_seconds,
                wake=woken,
                hotkeys={ord("b"): "breakglass"} if can_break_glass else None,
            )
        finally:
            stop_watching()
        if decided == "breakglass":
            await self._services.executors.run_db(requests.cancel, request.id, user)
            return await self._break_glass(needed) is not None
        if decided is None:
            await self._services.executors.run_db(requests.cancel, request.id, user)
            self._dialog.say(f"request #{request.id} cancelled")
            return False
        assert isinstance(decided, RequestView)
        if decided.status != "approved" or decided.grant_id is None:
            by = f" by {decided.decided_by}" if decided.decided_by else ""
            comment = f": {decided.comment}" if decided.comment else ""
            raise AccessDenied(f"request #{request.id} was {decided.status}{by}{comment}")
        self._dialog.say(f"request #{request.id} approved by {', '.join(decided.approvals)}")
        return True

    async def _break_glass(self, needed: NeedsApproval) -> GrantView | None:
        """Ask for a justification and invoke break-glass; None if the user gives up."""
        minimum = self._services.config.approvals.break_glass_min_justification
        while True:
            justification = await self._dialog.read_line(
                f"Break-glass justification (at least {minimum} characters): "
            )
            if justification is None:
                return None
            try:
                case, grant = await self._services.executors.run_db(
                    self._services.breakglass.invoke, user=self._user.name,
                    target=needed.target.name, account=needed.account, rule=needed.rule,
                    justification=justification, source=self._source,
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
        view = await self._services.executors.run_db(self._services.requests.get, request_id)
        return None if view.status == "pending" else view
