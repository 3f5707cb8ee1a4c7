"""Which target and account a login asks for, and whether the user may have it.

The SSH user name carries the destination: ``alice`` (menu), ``alice:web01``
(the target's default account) or ``alice:root@web01``. OpenSSH splits
``alice:root@web01@gw`` at the *last* ``@``, so the gateway sees
``alice:root@web01``.

For now access is a simple allow-list: a user may reach a target when one of
their groups is in the target's ``allowed_groups``. Policy with approvals
replaces this later; :class:`Destination.authority` is the seam that carries
what allowed the session into logs and audit.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import NAME_RE, GatewayConfig, TargetSettings
from gateway.errors import AccessDenied, DestinationSyntaxError, UnknownAccount, UnknownTarget

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
    #: What allowed it, e.g. ``allow-list:group=ops``.
    authority: str


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


class AllowList:
    """The simple group → target allow-list from the config."""

    def __init__(self, config: GatewayConfig) -> None:
        self._config = config

    def reachable_targets(self, groups: tuple[str, ...]) -> list[TargetSettings]:
        """Targets a member of ``groups`` may reach, in config order."""
        return [t for t in self._config.targets if set(groups) & set(t.allowed_groups)]

    def authorize(
        self, groups: tuple[str, ...], target_name: str, account: str | None
    ) -> Destination:
        """Resolve and check a destination for a user in ``groups``.

        Raises UnknownTarget, UnknownAccount or AccessDenied with a message fit
        for the user's terminal.
        """
        target = self._config.target(target_name)
        if target is None:
            reachable = ", ".join(t.name for t in self.reachable_targets(groups)) or "none"
            raise UnknownTarget(
                f"unknown target {target_name!r}. Targets you may reach: {reachable}"
            )
        matching = sorted(set(groups) & set(target.allowed_groups))
        if not matching:
            raise AccessDenied(f"you are not permitted to reach {target_name!r}")
        chosen = account or target.account_when_unnamed
        if chosen not in target.accounts:
            raise UnknownAccount(
                f"account {chosen!r} is not available on {target_name!r}. "
                f"Accounts: {', '.join(target.accounts)}"
            )
        return Destination(target, chosen, f"allow-list:group={matching[0]}")
