"""May this person reach this target account now? The one access decision.

Every path that lets a person reach a target asks :meth:`AccessDecisions.decide`:
a new session on the human lane (whatever the connection decided before), an
``ssh -L`` forward, the self-service ``request`` and ``breakglass`` commands,
``pamgate policy check`` and the console. The answer is a value, never an
exception, because "needs approval" and "denied" are normal outcomes:

- :class:`Allowed`: go ahead, under the rule (``policy:ID``) or the grant
  (``grant:N``, ``breakglass:N``) named as the authority;
- :class:`NeedsApproval`: an ``approval`` rule applies and no grant is
  active; the caller may open a request (or break glass, if the rule allows);
- :class:`Denied`: with the reason, fit for the user's terminal.

The decision reads the user as they are *now* (a disabled user, or one whose
groups changed, gets the new answer on their next channel), evaluates the
policy and looks for a grant with one clock reading.

The SSH user name carries the destination: ``alice`` (menu), ``alice:web01``
(the target's default account) or ``alice:root@web01``. OpenSSH splits
``alice:root@web01@gw`` at the *last* ``@``, so the gateway sees
``alice:root@web01``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from gateway.config import NAME_RE, GatewayConfig, RuleSettings, TargetSettings
from gateway.domain.approvals import AccessRequests, GrantView
from gateway.domain.identities import UserDirectory, UserView
from gateway.domain.policy import AccessContext, Mode, Policy
from gateway.errors import (
    AccessDenied,
    DestinationError,
    DestinationSyntaxError,
    UnknownAccount,
    UnknownTarget,
)

#: Longest login name accepted; anything longer is hostile or a mistake.
MAX_LOGIN_NAME = 200


@dataclass(frozen=True)
class LoginName:
    """A parsed SSH login name."""

    user: str
    target: str | None
    account: str | None


def user_part(login_name: str) -> str:
    """The user name in a login name (everything before the first ``:``)."""
    return login_name.split(":", 1)[0]


def parse_login_name(login_name: str) -> LoginName:
    """Parse ``user[:[account@]target]``; raise DestinationSyntaxError if malformed."""
    if len(login_name) > MAX_LOGIN_NAME:
        raise DestinationSyntaxError("the login name is too long")
    user, sep, rest = login_name.partition(":")
    if not NAME_RE.match(user):
        raise DestinationSyntaxError(f"invalid user name {user!r}")
    if not sep:
        return LoginName(user, None, None)
    account, at, target = rest.rpartition("@")
    if not at:
        account, target = "", rest
    if not NAME_RE.match(target):
        raise DestinationSyntaxError(
            f"invalid target {target!r}: log in as USER:TARGET or USER:ACCOUNT@TARGET"
        )
    if at and not NAME_RE.match(account):
        raise DestinationSyntaxError(
            f"invalid account {account!r}: log in as USER:TARGET or USER:ACCOUNT@TARGET"
        )
    return LoginName(user, target, account or None)


@dataclass(frozen=True)
class Destination:
    """Where a session goes and what allowed it: what session setup needs from a decision."""

    target: TargetSettings
    account: str
    #: What allowed it, e.g. ``policy:ops-web``, ``grant:12`` or ``nhi:svc;serial=4``.
    authority: str
    #: The grant behind it, if any; sessions end with it.
    grant: GrantView | None = None


@dataclass(frozen=True)
class Allowed:
    """The user may reach ``account@target`` now."""

    user: UserView
    target: TargetSettings
    account: str
    #: The allow or approval rule whose limits (file transfer, forwarding) govern the access.
    rule: RuleSettings
    #: ``policy:ID`` for an allow rule; ``grant:N`` or ``breakglass:N`` under an approval rule.
    authority: str
    #: When the decision was made (the policy's clock).
    at: datetime
    #: The grant that makes an approval rule's answer "yes", if that is the case.
    grant: GrantView | None = None

    @property
    def destination(self) -> Destination:
        return Destination(self.target, self.account, self.authority, self.grant)


@dataclass(frozen=True)
class NeedsApproval:
    """An approval rule applies and no grant is active: a request (or break-glass) is the way."""

    user: UserView
    target: TargetSettings
    account: str
    rule: RuleSettings
    at: datetime

    @property
    def reason(self) -> str:
        return f"{self.account}@{self.target.name} needs approval (rule {self.rule.id!r})"

    @property
    def break_glass_allowed(self) -> bool:
        return self.rule.break_glass


class Refusal(StrEnum):
    """Why a decision is "no"."""

    UNKNOWN_USER = "unknown-user"
    USER_DISABLED = "user-disabled"
    UNKNOWN_TARGET = "unknown-target"
    UNKNOWN_ACCOUNT = "unknown-account"
    POLICY = "policy"


@dataclass(frozen=True)
class Denied:
    """The user may not reach the destination; ``reason`` says why, for their terminal."""

    refusal: Refusal
    reason: str
    #: The deny rule, when one decided it.
    rule_id: str | None = None

    def error(self) -> DestinationError:
        """The same answer as an error, for paths that end on it (a session, a forward)."""
        if self.refusal == Refusal.UNKNOWN_TARGET:
            return UnknownTarget(self.reason)
        if self.refusal == Refusal.UNKNOWN_ACCOUNT:
            return UnknownAccount(self.reason)
        return AccessDenied(self.reason)


AccessDecision = Allowed | NeedsApproval | Denied


class AccessDecisions:
    """Answers "may this person reach this target account now?" (see the module docstring)."""

    def __init__(
        self,
        config: GatewayConfig,
        policy: Policy,
        users: UserDirectory,
        requests: AccessRequests,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self.policy = policy
        self._users = users
        self._requests = requests
        self._clock = clock

    def decide(
        self,
        user: str,
        target: str,
        account: str | None,
        *,
        source: str,
        at: datetime | None = None,
    ) -> AccessDecision:
        """Decide for ``user`` (read afresh) reaching ``account@target`` from ``source``.

        ``account`` None means the target's default account. ``at`` defaults
        to now; the policy and the grant lookup use the same instant.
        """
        when = at or datetime.fromtimestamp(self._clock(), UTC)
        person = self._users.get(user)
        if person is None:
            return Denied(Refusal.UNKNOWN_USER, f"no user named {user!r}")

        def grant_now(target_name: str, account_name: str) -> GrantView | None:
            return self._requests.active_grant(person.name, target_name, account_name, at=when)

        return self._judge(person, target, account, source, when, grant_now)

    def decide_for(
        self,
        user: UserView,
        target: str,
        account: str | None,
        *,
        source: str,
        at: datetime,
        grant_of: Callable[[str, str], GrantView | None],
    ) -> AccessDecision:
        """The same decision as :meth:`decide`, for a user the caller has just read and with
        ``grant_of(target, account)`` finding the current grant: the entitlement report asks
        it for every person and target account at one instant, having read them all once."""
        return self._judge(user, target, account, source, at, grant_of)

    def still_allowed(
        self,
        user: UserView,
        target: str,
        account: str,
        *,
        source: str,
        at: datetime,
        grant: GrantView | None,
    ) -> Denied | None:
        """Why a live session or forward may run no longer, or None if it still may.

        The same judgement as :meth:`decide`, for a user the caller has just
        read (the lanes' watch reads every live user in one query) and the
        grant the session runs under, whose end and revocation are checked
        apart.
        """
        decision = self._judge(user, target, account, source, at, lambda _t, _a: grant)
        if isinstance(decision, Allowed):
            return None
        if isinstance(decision, NeedsApproval):
            return Denied(Refusal.POLICY, f"{decision.reason}, and this access has no grant")
        return decision

    def _judge(
        self,
        person: UserView,
        target: str,
        account: str | None,
        source: str,
        when: datetime,
        grant_of: Callable[[str, str], GrantView | None],
    ) -> AccessDecision:
        """The decision for a user already read; ``grant_of(target, account)`` finds the grant
        when an approval rule applies."""
        if person.disabled:
            return Denied(Refusal.USER_DISABLED, f"user {person.name} is disabled")
        settings = self._config.target(target)
        if settings is None:
            reachable = ", ".join(t.name for t in self.reachable_targets(person)) or "none"
            return Denied(
                Refusal.UNKNOWN_TARGET,
                f"unknown target {target!r}. Targets you may reach: {reachable}",
            )
        chosen = account or settings.account_when_unnamed
        if chosen not in settings.accounts:
            return Denied(
                Refusal.UNKNOWN_ACCOUNT,
                f"account {chosen!r} is not available on {target!r}. "
                f"Accounts: {', '.join(settings.accounts)}",
            )
        decision = self.policy.evaluate(
            AccessContext(person.name, person.groups, settings.name, chosen, source, when)
        )
        if decision.mode == Mode.DENY or decision.rule is None:
            return Denied(
                Refusal.POLICY,
                f"you are not permitted to reach {chosen}@{target} ({decision.reason})",
                decision.rule_id,
            )
        if decision.mode == Mode.ALLOW:
            return Allowed(person, settings, chosen, decision.rule, decision.authority, when)
        grant = grant_of(settings.name, chosen)
        if grant is None:
            return NeedsApproval(person, settings, chosen, decision.rule, when)
        return Allowed(person, settings, chosen, decision.rule, grant.authority, when, grant)

    def fresh_code_rule(
        self, user: str, target: str, account: str | None, *, source: str
    ) -> str | None:
        """The id of the rule that asks for a fresh verification code (``fresh_mfa``) for this
        destination, or None.

        Asked when someone presents a login certificate for a login that names
        a target: the lane then asks for the code too (partial success).
        """
        decision = self.decide(user, target, account, source=source)
        if isinstance(decision, Denied) or not decision.rule.fresh_mfa:
            return None
        return decision.rule.id

    def accepts_password_with_code(
        self, user: str, target: str | None, account: str | None, *, source: str
    ) -> bool:
        """Whether ``user``'s password prompt also takes the password with the current code
        appended: they are in one of ``[auth] password_with_code_groups``, or the login names
        a target whose rule says ``password_with_code``."""
        person = self._users.get(user)
        if person is None or person.disabled:
            return False
        if set(person.groups) & set(self._config.auth.password_with_code_groups):
            return True
        if target is None:
            return False
        decision = self.decide(user, target, account, source=source)
        return not isinstance(decision, Denied) and decision.rule.password_with_code

    def reachable_targets(self, user: UserView) -> list[TargetSettings]:
        """Targets some allow or approval rule could open to ``user`` (menus and hints)."""
        return self.policy.reachable_targets(user.name, user.groups)


def fresh_code_refusal(decision: Allowed | NeedsApproval, *, fresh_code: bool) -> str | None:
    """Why a connection that signed in without a fresh code (a login certificate alone) may
    not go where ``decision`` leads, or None.

    The lane asks for the code at sign-in when the login name names a target
    under a ``fresh_mfa`` rule; this catches the destinations it could not
    know then (the menu).
    """
    if fresh_code or not decision.rule.fresh_mfa:
        return None
    user = decision.user.name
    return (
        f"rule {decision.rule.id!r} asks for a fresh verification code, and this connection "
        f"signed in with a login certificate alone: log in as {user}:{decision.target.name} "
        "to be asked for one"
    )
