"""Which target and account a login asks for, and whether the user may have it.

The SSH user name carries the destination: ``alice`` (menu), ``alice:web01``
(the target's default account) or ``alice:root@web01``. OpenSSH splits
``alice:root@web01@gw`` at the *last* ``@``, so the gateway sees
``alice:root@web01``.

Whether the user may have it is the policy's decision (:mod:`gateway.domain.policy`);
:attr:`Destination.authority` carries the deciding rule into the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from gateway.config import NAME_RE, GatewayConfig, TargetSettings
from gateway.domain.policy import AccessContext, Decision, Mode, Policy
from gateway.errors import (
    AccessDenied,
    DestinationError,
    DestinationSyntaxError,
    UnknownAccount,
    UnknownTarget,
)

if TYPE_CHECKING:
    from gateway.domain.approvals import GrantView

#: Longest login name accepted; anything longer is hostile or a mistake.
MAX_LOGIN_NAME = 200


@dataclass(frozen=True)
class LoginName:
    """A parsed SSH login name."""

    user: str
    target: str | None
    account: str | None


@dataclass(frozen=True)
class Destination:
    """A target and account the user is allowed to reach, and why."""

    target: TargetSettings
    account: str
    #: What allowed it, e.g. ``policy:ops-web`` or ``grant:12``.
    authority: str
    #: The grant behind it, when an approval rule applies; sessions end with it.
    grant: GrantView | None = None


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


class ApprovalRequired(DestinationError):
    """The policy allows this destination only with approval (a request, then a grant)."""

    def __init__(self, message: str, destination: Destination, decision: Decision) -> None:
        super().__init__(message)
        self.destination = destination
        self.decision = decision


class AccessResolver:
    """Turns a requested target and account into a Destination, or says why not."""

    def __init__(self, config: GatewayConfig, policy: Policy) -> None:
        self._config = config
        self.policy = policy

    def reachable_targets(self, user: str, groups: tuple[str, ...]) -> list[TargetSettings]:
        """Targets the user might reach (for menus and hints)."""
        return self.policy.reachable_targets(user, groups)

    def authorize(
        self,
        user: str,
        groups: tuple[str, ...],
        target_name: str,
        account: str | None,
        *,
        source: str,
        at: datetime,
    ) -> Destination:
        """Resolve and check a destination against the policy.

        Raises UnknownTarget, UnknownAccount, AccessDenied or ApprovalRequired
        with a message fit for the user's terminal.
        """
        target = self._config.target(target_name)
        if target is None:
            reachable = ", ".join(t.name for t in self.reachable_targets(user, groups)) or "none"
            raise UnknownTarget(
                f"unknown target {target_name!r}. Targets you may reach: {reachable}"
            )
        chosen = account or target.account_when_unnamed
        if chosen not in target.accounts:
            raise UnknownAccount(
                f"account {chosen!r} is not available on {target_name!r}. "
                f"Accounts: {', '.join(target.accounts)}"
            )
        decision = self.policy.evaluate(
            AccessContext(user, groups, target.name, chosen, source, at)
        )
        destination = Destination(target, chosen, decision.authority)
        if decision.mode == Mode.ALLOW:
            return destination
        if decision.mode == Mode.APPROVAL:
            raise ApprovalRequired(
                f"{chosen}@{target_name} needs approval ({decision.reason})", destination, decision
            )
        raise AccessDenied(
            f"you are not permitted to reach {chosen}@{target_name} ({decision.reason})"
        )
