"""The entitlement analysis as one service: the report, stale findings and suggestions.

:class:`Entitlements` reads the identities, the policy's answers and the
records once per call and hands back plain values; the operator actions, the
review campaigns, the CLI and the console all use it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from gateway.config import GatewayConfig
from gateway.domain.access import AccessDecisions
from gateway.domain.approvals import AccessRequests, GrantView
from gateway.domain.entitlements.effective import AccessPath, EffectiveAccess
from gateway.domain.entitlements.stale import Finding, stale_findings
from gateway.domain.entitlements.suggest import (
    GroupSuggestion,
    ScopeSuggestion,
    suggest_groups,
    suggest_scope,
)
from gateway.domain.entitlements.usage import UsageIndex, UsageReader
from gateway.domain.identities import UserDirectory
from gateway.domain.machines.registry import MachineRegistry
from gateway.errors import PamgateError, UnknownUser

#: The longest usage window asked for (ten years).
MAX_DAYS = 3650


def check_days(days: int) -> None:
    """PamgateError unless ``days`` is a usage window of 1 to :data:`MAX_DAYS` days."""
    if not 1 <= days <= MAX_DAYS:
        raise PamgateError(f"--days must be between 1 and {MAX_DAYS}")


class Entitlements:
    """Who can reach what, what is stale, and what would be narrower."""

    def __init__(
        self,
        config: GatewayConfig,
        access: AccessDecisions,
        requests: AccessRequests,
        users: UserDirectory,
        machines: MachineRegistry,
        usage: UsageReader,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        #: The paths of one identity (the report is all of them).
        self.effective = EffectiveAccess(config, access)
        self._requests = requests
        self._users = users
        self._machines = machines
        self._usage = usage
        self._clock = clock

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def active_grants(self, at: datetime) -> dict[tuple[str, str, str], GrantView]:
        """The grants current at ``at``, by (user, target, account)."""
        return self._requests.active_grants(at=at)

    def usage(self) -> UsageIndex:
        """The records, read now."""
        return self._usage.read()

    def report(self, *, identity: str | None = None, target: str | None = None) -> list[AccessPath]:
        """Every path of every human and NHI (or of ``identity``, or to ``target``), humans
        first, by name. PamgateError for an identity or target nobody knows."""
        if target is not None and self._config.target(target) is None:
            raise PamgateError(f"no target named {target!r} in the config")
        users = self._users.list_users()
        machines = self._machines.list()
        if identity is not None:
            users = [u for u in users if u.name == identity]
            machines = [m for m in machines if m.name == identity]
            if not users and not machines:
                raise PamgateError(f"no human or machine identity named {identity!r}")
        usage, now = self._usage.read(), self.now()
        grants = self.active_grants(now)
        paths: list[AccessPath] = []
        for user in users:
            paths += self.effective.human_paths(user, usage, now, grants)
        for machine in machines:
            paths += self.effective.machine_paths(machine, usage)
        if target is not None:
            paths = [path for path in paths if path.target == target]
        return paths

    def stale(self, days: int) -> list[Finding]:
        """Stale and excessive access over the last ``days`` days."""
        check_days(days)
        return stale_findings(
            config=self._config, users=self._users.list_users(), machines=self._machines.list(),
            usage=self._usage.read(), days=days, now=self.now(),
        )  # fmt: skip

    def suggest_machine(self, name: str, days: int) -> ScopeSuggestion:
        """The NHI ``name``'s scope narrowed to its use in the last ``days`` days."""
        check_days(days)
        machine = self._machines.get(name)
        return suggest_scope(machine, self._usage.read(), self.now() - timedelta(days=days))

    def suggest_user(self, name: str, days: int) -> GroupSuggestion:
        """The person ``name``'s groups without those whose rules they did not use."""
        check_days(days)
        user = self._users.get(name)
        if user is None:
            raise UnknownUser(f"no user named {name!r}")
        return suggest_groups(
            user, self._usage.read(), self._config, self.now() - timedelta(days=days)
        )
