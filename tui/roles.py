"""Console roles, from the user's groups and the ``[console]`` settings.

- ``approver``: approve and deny access requests;
- ``auditor``: read live sessions, recordings, break-glass cases and the audit trails,
  and record break-glass verdicts;
- ``admin``: terminate sessions, revoke grants, manage human and machine identities.

Every screen and action checks the role it needs and says plainly when it is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gateway.config import ConsoleSettings


class Role(StrEnum):
    APPROVER = "approver"
    AUDITOR = "auditor"
    ADMIN = "admin"


@dataclass(frozen=True)
class ConsoleUser:
    """Who is signed in to the console, and what they may do."""

    name: str
    groups: tuple[str, ...]
    roles: frozenset[Role]

    def has(self, role: Role) -> bool:
        return role in self.roles

    def missing(self, role: Role, to_do: str) -> str | None:
        """A plain sentence if the user lacks ``role`` for ``to_do``; None if they have it."""
        if role in self.roles:
            return None
        return f"You need the {role} role to {to_do} (you are {self.describe_roles()})."

    def describe_roles(self) -> str:
        return ", ".join(sorted(self.roles)) or "signed in with no console role"


def roles_for(groups: tuple[str, ...] | list[str], settings: ConsoleSettings) -> frozenset[Role]:
    """The roles the groups give."""
    member = set(groups)
    roles = set()
    for role, role_groups in (
        (Role.APPROVER, settings.approver_groups),
        (Role.AUDITOR, settings.auditor_groups),
        (Role.ADMIN, settings.admin_groups),
    ):
        if member & set(role_groups):
            roles.add(role)
    return frozenset(roles)
