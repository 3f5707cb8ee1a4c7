"""Access policy: which rule decides whether a user may reach a target account, now.

Rules come from the config (``[[rules]]``). A rule applies when all of its
conditions hold: the user is in one of its groups, the target is one of its
targets (by name, or by ``group:NAME`` from ``[target_groups]``, or by
``label:NAME``), the account is allowed, the source address is in its CIDRs,
and the time is within its days and hours. Among the rules that apply:

- ``deny`` wins;
- else ``allow`` (first such rule in file order);
- else ``approval`` (first such rule);
- no rule means deny.

Every decision names the rule that produced it, which is what the audit
trail records as the authority. Plain Python, no sockets; the clock is
passed in.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, time
from enum import StrEnum

from gateway.config import GatewayConfig, RuleSettings, TargetSettings

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Mode(StrEnum):
    """What a rule does."""

    ALLOW = "allow"
    APPROVAL = "approval"
    DENY = "deny"


@dataclass(frozen=True)
class AccessContext:
    """Everything a decision may depend on."""

    user: str
    groups: tuple[str, ...]
    target: str
    account: str
    source: str
    at: datetime


@dataclass(frozen=True)
class Decision:
    """The outcome of evaluating the policy for one request."""

    mode: Mode
    rule_id: str | None
    reason: str
    rule: RuleSettings | None = None

    @property
    def authority(self) -> str:
        """What the audit trail records as having allowed (or refused) the action."""
        return f"policy:{self.rule_id}" if self.rule_id else "policy:no-rule"


class Policy:
    """Evaluates the configured rules."""

    def __init__(self, config: GatewayConfig) -> None:
        self._config = config

    def evaluate(self, context: AccessContext) -> Decision:
        """Decide for ``context``; deny wins, no rule means deny."""
        target = self._config.target(context.target)
        if target is None:
            return Decision(Mode.DENY, None, f"unknown target {context.target!r}")
        applying = [rule for rule in self._config.rules if self._applies(rule, target, context)]
        for mode in (Mode.DENY, Mode.ALLOW, Mode.APPROVAL):
            for rule in applying:
                if rule.mode == mode:
                    return Decision(mode, rule.id, f"rule {rule.id!r} ({mode})", rule)
        return Decision(
            Mode.DENY, None, f"no rule lets {context.user} reach {context.account}@{context.target}"
        )

    def governing_rule(self, context: AccessContext) -> RuleSettings | None:
        """The allow or approval rule whose limits (file transfer, forwarding) govern a
        session in ``context``; None when the decision is deny."""
        decision = self.evaluate(context)
        return decision.rule if decision.mode != Mode.DENY else None

    def reachable_targets(self, user: str, groups: tuple[str, ...]) -> list[TargetSettings]:
        """Targets some non-deny rule could open to this user (for menus and hints)."""
        found = []
        for target in self._config.targets:
            for rule in self._config.rules:
                if (
                    rule.mode != Mode.DENY
                    and self._matches_user(rule, groups)
                    and self._matches_target(rule, target)
                ):
                    found.append(target)
                    break
        return found

    # -- conditions ------------------------------------------------------------

    def _applies(self, rule: RuleSettings, target: TargetSettings, context: AccessContext) -> bool:
        return (
            self._matches_user(rule, context.groups)
            and self._matches_target(rule, target)
            and (not rule.accounts or context.account in rule.accounts)
            and _in_networks(context.source, rule.sources)
            and _in_window(rule, context.at)
        )

    @staticmethod
    def _matches_user(rule: RuleSettings, groups: tuple[str, ...]) -> bool:
        return "*" in rule.groups or bool(set(rule.groups) & set(groups))

    def _matches_target(self, rule: RuleSettings, target: TargetSettings) -> bool:
        for selector in rule.targets:
            if selector in ("*", target.name):
                return True
            kind, _, name = selector.partition(":")
            if kind == "group" and target.name in self._config.target_groups.get(name, []):
                return True
            if kind == "label" and name in target.labels:
                return True
        return False


def _in_networks(source: str, networks: list[str]) -> bool:
    if not networks:
        return True
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return False  # an unparseable source never matches a network condition
    return any(address in ipaddress.ip_network(network, strict=False) for network in networks)


def _in_window(rule: RuleSettings, at: datetime) -> bool:
    local = at.astimezone(UTC)
    if rule.days and DAYS[local.weekday()] not in rule.days:
        return False
    if rule.hours:
        start_text, _, end_text = rule.hours.partition("-")
        start, end = time.fromisoformat(start_text), time.fromisoformat(end_text)
        now = local.time()
        inside = start <= now < end if start <= end else (now >= start or now < end)
        if not inside:
            return False
    return True
