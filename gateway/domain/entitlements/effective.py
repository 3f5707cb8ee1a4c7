"""Effective access: every target account each human and NHI can reach now, and through what.

For people the answer is the one access decision's
(:meth:`gateway.domain.access.AccessDecisions.decide_for`, :meth:`~.decide` for people
and grants read once), asked for every
target account of the config, at one instant, from "anywhere" (a source no
network condition matches) and from inside each network some rule names: an
allow rule, an approval rule (its approvers, how many, break-glass), or the
grant that answers it now. Nothing here evaluates a rule itself.

For NHIs the answer is their registration: each scope entry with its
commands, source networks and maximum certificate lifetime, reachable while
the NHI is ``active``.

Each path carries its last use and session count from the records
(:mod:`.usage`). Plain Python; no sockets.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.config import GatewayConfig, RuleSettings
from gateway.domain.access import AccessDecisions, Allowed, NeedsApproval
from gateway.domain.approvals import GrantView
from gateway.domain.entitlements.usage import UsageIndex
from gateway.domain.identities import UserView
from gateway.domain.machines.registry import MachineView

#: The source the decision is asked for "from anywhere": it matches no network condition,
#: so only rules without ``sources`` apply to it.
ANYWHERE = "anywhere"


@dataclass(frozen=True)
class AccessPath:
    """One identity reaching one target account, and what makes it possible."""

    #: ``human`` or ``machine``.
    identity_type: str
    identity: str
    target: str
    account: str
    #: ``allow``, ``approval``, ``grant``, ``breakglass`` (a current grant) or ``nhi-scope``.
    via: str
    #: ``policy:ID``, ``grant:N``, ``breakglass:N`` or ``nhi:NAME``.
    authority: str
    #: Source networks it is limited to; empty = from anywhere.
    sources: tuple[str, ...]
    #: What else bounds it: approvers, break-glass, file transfer, hours; commands, max TTL.
    limits: dict[str, Any] = field(default_factory=dict)
    #: ``active``, or why it does not work now (``suspended``).
    status: str = "active"
    last_used: datetime | None = None
    sessions: int = 0

    def record(self) -> dict[str, Any]:
        """As ``access report --json`` prints it."""
        return {
            "identity_type": self.identity_type, "identity": self.identity,
            "target": self.target, "account": self.account, "via": self.via,
            "authority": self.authority, "sources": list(self.sources), "limits": self.limits,
            "status": self.status, "last_used": self.last_used, "sessions": self.sessions,
        }  # fmt: skip


def rule_limits(rule: RuleSettings) -> dict[str, Any]:
    """The bounds of access under a rule, for the report."""
    limits: dict[str, Any] = {"rule": rule.id, "file_transfer": rule.file_transfer}
    if rule.mode == "approval":
        limits.update(
            approver_groups=list(rule.approver_groups),
            approvals_required=rule.approvals_required,
            max_duration=rule.max_duration,
            break_glass=rule.break_glass,
        )
    if rule.days:
        limits["days"] = list(rule.days)
    if rule.hours:
        limits["hours"] = rule.hours
    if rule.forward_local:
        limits["forward_local"] = list(rule.forward_local)
    return limits


def machine_limits(machine: MachineView) -> dict[str, Any]:
    """The bounds of an NHI's access, for the report."""
    limits: dict[str, Any] = {
        "commands": list(machine.commands),
        "max_ttl_seconds": machine.max_ttl_seconds,
        "allow_pty": machine.allow_pty,
        "allow_sftp": machine.allow_sftp,
    }
    if machine.sftp_paths is not None:
        limits["sftp_paths"] = list(machine.sftp_paths)
    return limits


def _probe_address(network: str) -> str:
    """An address inside ``network``, to ask the decision "from there"."""
    return str(ipaddress.ip_network(network, strict=False).network_address)


class EffectiveAccess:
    """Builds the access report (see the module docstring)."""

    def __init__(self, config: GatewayConfig, access: AccessDecisions) -> None:
        self._config = config
        self._access = access

    def human_paths(
        self,
        user: UserView,
        usage: UsageIndex,
        at: datetime,
        grants: Mapping[tuple[str, str, str], GrantView],
    ) -> list[AccessPath]:
        """Every target account ``user`` (as just read) can reach at ``at``, given the grants
        current then (:meth:`AccessRequests.active_grants`); none for a disabled user."""
        if user.disabled:
            return []

        def grant_of(target: str, account: str) -> GrantView | None:
            return grants.get((user.name, target, account))

        networks = sorted({net for rule in self._config.rules for net in rule.sources})
        probes = [(ANYWHERE, None)] + [(_probe_address(net), net) for net in networks]
        paths = []
        for target in self._config.targets:
            for account in target.accounts:
                found: dict[str, tuple[str, RuleSettings, list[str | None], Any]] = {}
                for source, network in probes:
                    decision = self._access.decide_for(user, target.name, account, source=source,
                                                       at=at, grant_of=grant_of)  # fmt: skip
                    if isinstance(decision, Allowed):
                        via = "allow" if decision.grant is None else (
                            "breakglass" if decision.authority.startswith("breakglass:")
                            else "grant"
                        )  # fmt: skip
                        key, rule, grant = decision.authority, decision.rule, decision.grant
                    elif isinstance(decision, NeedsApproval):
                        via, key, rule, grant = "approval", f"policy:{decision.rule.id}", (
                            decision.rule), None  # fmt: skip
                    else:
                        continue
                    entry = found.setdefault(key, (via, rule, [], grant))
                    entry[2].append(network)
                use = usage.path("human", user.name, target.name, account)
                for authority, (via, rule, networks_seen, grant) in found.items():
                    sources = () if None in networks_seen else tuple(
                        n for n in networks_seen if n is not None
                    )  # fmt: skip
                    limits = rule_limits(rule)
                    if grant is not None:
                        limits["grant_ends_at"] = grant.ends_at
                    paths.append(AccessPath(
                        "human", user.name, target.name, account, via, authority, sources,
                        limits, "active", use.last_used, use.sessions,
                    ))  # fmt: skip
        return paths

    def machine_paths(self, machine: MachineView, usage: UsageIndex) -> list[AccessPath]:
        """An NHI's scope entries (none once offboarded)."""
        if machine.status == "offboarded":
            return []
        paths = []
        for entry in machine.targets:
            use = usage.path("machine", machine.name, entry.target, entry.account)
            paths.append(AccessPath(
                "machine", machine.name, entry.target, entry.account, "nhi-scope",
                machine.scope_id, machine.sources, machine_limits(machine), machine.status,
                use.last_used, use.sessions,
            ))  # fmt: skip
        return paths
