"""Narrower scopes drawn from observed use: what an NHI (or a person's groups) would be
if it kept only what it used.

For an NHI, from its sessions since a date:

- targets: the scope entries it used;
- commands: exact commands it ran; a ``re:`` pattern becomes the exact commands it
  matched (up to :data:`MAX_EXPANDED` of them; beyond that the pattern stays);
  a pattern nothing matched is dropped;
- sources: with no source limit, the addresses it came from (``/32``, ``/128``);
  with one, the networks it came from;
- pty only if it opened a shell, SFTP only if it used a subsystem.

An NHI that used nothing has no narrower scope: the suggestion is to suspend or
offboard it. For a person: their groups, minus those that only give access
through rules they did not use (groups that give an operator role, or that no
rule names, stay). Plain Python; no sockets.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.config import GatewayConfig
from gateway.domain.entitlements.usage import PathUse, UsageIndex
from gateway.domain.identities import UserView
from gateway.domain.machines.registry import MachineView, ScopeTarget, command_matches
from gateway.domain.operators.roles import role_groups

#: A ``re:`` pattern is replaced by the exact commands it matched only up to this many.
MAX_EXPANDED = 10


@dataclass(frozen=True)
class ScopeSuggestion:
    """An NHI's scope, narrowed to its observed use since ``since``."""

    nhi: str
    since: datetime
    targets: tuple[ScopeTarget, ...]
    commands: tuple[str, ...]
    sources: tuple[str, ...]
    allow_pty: bool
    allow_sftp: bool
    #: What the narrower scope leaves out, one line each (empty: nothing to narrow).
    removed: tuple[str, ...] = field(default=())

    @property
    def narrowable(self) -> bool:
        """Whether a narrower scope exists (it used something, and not everything)."""
        return bool(self.targets and self.commands) and bool(self.removed)

    @property
    def unused(self) -> bool:
        """It used nothing at all in the window."""
        return not self.targets

    def record(self) -> dict[str, Any]:
        """As ``access suggest --json`` prints it (and a review item keeps it)."""
        return {
            "nhi": self.nhi, "since": self.since,
            "targets": [f"{t.target}:{t.account}" for t in self.targets],
            "commands": list(self.commands), "sources": list(self.sources),
            "allow_pty": self.allow_pty, "allow_sftp": self.allow_sftp,
            "removed": list(self.removed), "narrowable": self.narrowable,
            "unused": self.unused,
        }  # fmt: skip

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ScopeSuggestion:
        """Back from :meth:`record` (as a review item stored it)."""
        since = record["since"]
        return cls(
            nhi=record["nhi"],
            since=datetime.fromisoformat(since) if isinstance(since, str) else since,
            targets=tuple(
                ScopeTarget(*entry.split(":", 1)) for entry in record["targets"]
            ),
            commands=tuple(record["commands"]), sources=tuple(record["sources"]),
            allow_pty=record["allow_pty"], allow_sftp=record["allow_sftp"],
            removed=tuple(record["removed"]),
        )  # fmt: skip


def _in_window(use: PathUse, since: datetime) -> bool:
    return use.last_used is not None and use.last_used >= since


def suggest_scope(machine: MachineView, usage: UsageIndex, since: datetime) -> ScopeSuggestion:
    """The narrower scope ``machine`` would have if it kept only what it used since ``since``."""
    removed: list[str] = []
    used_paths: list[PathUse] = []
    targets = []
    for entry in machine.targets:
        use = usage.path("machine", machine.name, entry.target, entry.account)
        if _in_window(use, since):
            targets.append(entry)
            used_paths.append(use)
        else:
            removed.append(
                f"target {entry.target}:{entry.account} (not used since {since:%Y-%m-%d})"
            )
    ran = sorted({cmd for use in used_paths for cmd, at in use.commands.items() if at >= since})
    commands: list[str] = []
    for pattern in machine.commands:
        matched = [command for command in ran if command_matches(pattern, command)]
        if not matched:
            removed.append(f"command {pattern!r} (never run since {since:%Y-%m-%d})")
        elif pattern.startswith("re:") and len(matched) <= MAX_EXPANDED:
            commands.extend(c for c in matched if c not in commands)
            removed.append(f"command {pattern!r} narrowed to {', '.join(map(repr, matched))}")
        elif pattern not in commands:
            commands.append(pattern)
    seen_sources = sorted({s for use in used_paths for s, at in use.sources.items() if at >= since})
    sources = _narrow_sources(machine.sources, seen_sources)
    if sources != machine.sources:
        removed.append(
            f"sources {', '.join(machine.sources) or 'anywhere'} narrowed to {', '.join(sources)}"
        )
    kinds = {kind for use in used_paths for kind, at in use.kinds.items() if at >= since}
    allow_pty = machine.allow_pty and "shell" in kinds
    allow_sftp = machine.allow_sftp and "subsystem" in kinds
    if machine.allow_pty and not allow_pty:
        removed.append("pty (no shell opened)")
    if machine.allow_sftp and not allow_sftp:
        removed.append("SFTP (never used)")
    return ScopeSuggestion(
        machine.name, since, tuple(targets), tuple(commands), sources, allow_pty, allow_sftp,
        tuple(removed),
    )  # fmt: skip


def _narrow_sources(current: tuple[str, ...], seen: list[str]) -> tuple[str, ...]:
    """The networks an NHI came from: its addresses when it had no limit, else those of its
    networks it came from (an unparseable source leaves the limit as it is)."""
    try:
        addresses = [ipaddress.ip_address(source) for source in seen]
    except ValueError:
        return current
    if not addresses:
        return current
    if not current:
        return tuple(f"{a}/{a.max_prefixlen}" for a in addresses)
    networks = [ipaddress.ip_network(n, strict=False) for n in current]
    kept = [text for text, net in zip(current, networks, strict=True)
            if any(a in net for a in addresses)]  # fmt: skip
    return tuple(kept) or current


@dataclass(frozen=True)
class GroupSuggestion:
    """A person's groups, without those that only give access they did not use."""

    user: str
    since: datetime
    groups: tuple[str, ...]
    removed: tuple[str, ...]

    @property
    def narrowable(self) -> bool:
        return bool(self.removed)

    def record(self) -> dict[str, Any]:
        return {"user": self.user, "since": self.since, "groups": list(self.groups),
                "removed": list(self.removed), "narrowable": self.narrowable}  # fmt: skip


def suggest_groups(
    user: UserView, usage: UsageIndex, config: GatewayConfig, since: datetime
) -> GroupSuggestion:
    """``user``'s groups, keeping a group if it gives an operator role, if no rule names it,
    or if some rule naming it was used by ``user`` since ``since``."""
    role_giving = {group for groups in role_groups(config).values() for group in groups}
    used_rules = set()
    for (_target, _account), use in usage.identity_paths("human", user.name).items():
        for authority, at in use.authorities.items():
            if at >= since:
                used_rules.add(authority)
    used_rule_ids = _rule_ids(used_rules, usage)
    kept, removed = [], []
    for group in user.groups:
        naming = [rule.id for rule in config.rules if group in rule.groups and rule.mode != "deny"]
        if group in role_giving or not naming or used_rule_ids & set(naming):
            kept.append(group)
        else:
            removed.append(f"group {group} (rules {', '.join(naming)} not used since "
                           f"{since:%Y-%m-%d})")  # fmt: skip
    return GroupSuggestion(user.name, since, tuple(kept), tuple(removed))


def _rule_ids(authorities: set[str], usage: UsageIndex) -> set[str]:
    """The rules behind session authorities (grants resolved as the usage index did)."""
    ids = set()
    for authority in authorities:
        kind, _, value = authority.partition(":")
        if kind == "policy":
            ids.add(value)
        elif authority in usage.authority_rules:
            ids.add(usage.authority_rules[authority])
    return ids
