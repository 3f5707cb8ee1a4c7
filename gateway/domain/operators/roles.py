"""The roles, which groups give them, and who an operator is.

- ``approver``: decides access requests. Members of ``[console]
  approver_groups``, and of every rule's ``approver_groups`` (the policy names
  them approvers; which requests each may decide is still the rule's to say).
- ``auditor``: reads live sessions, recordings (replays, exports) and the
  audit trails, and reviews break-glass use. Members of ``[console]
  auditor_groups``.
- ``admin``: terminates sessions, revokes grants, manages human and machine
  identities, and reads what auditors read. Members of ``[console]
  admin_groups``.

The local administrator (whoever runs ``pamgate`` on the gateway host with its
config and database) holds every role: that access allows anything anyway, so
the trail names it honestly rather than pretending otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from gateway.config import GatewayConfig
from gateway.domain.audit.actors import LOCAL_ADMIN_AUTHORITY, local_admin_name, role_authority
from gateway.domain.identities import UserView
from gateway.errors import PamgateError


class Role(StrEnum):
    """An operator role."""

    APPROVER = "approver"
    AUDITOR = "auditor"
    ADMIN = "admin"


ALL_ROLES = frozenset(Role)

#: Who may do what. The console's sections show themselves to the first four.
SEE_REQUESTS = frozenset({Role.APPROVER, Role.AUDITOR, Role.ADMIN})
SEE_BREAKGLASS = frozenset({Role.APPROVER, Role.AUDITOR, Role.ADMIN})
SEE_SESSIONS = frozenset({Role.AUDITOR, Role.ADMIN})
SEE_IDENTITIES = frozenset({Role.AUDITOR, Role.ADMIN})
DECIDE_REQUESTS = frozenset({Role.APPROVER})
REVIEW_BREAKGLASS = SEE_BREAKGLASS
#: The evidence: audit trails, recordings, command logs, file transfers (auditors and admins).
READ_TRAILS = SEE_SESSIONS
CHANGE = frozenset({Role.ADMIN})


class RoleMissing(PamgateError):
    """The operator lacks the role an action needs (nothing changed)."""


class OperatorSignedOut(PamgateError):
    """The operator was disabled or removed since signing in: every action is refused."""


@dataclass(frozen=True)
class Operator:
    """Who acts, and what they may do."""

    #: As the trail names them: a pamgate user's name, or ``local-admin:<os-user>@<host>``.
    name: str
    groups: tuple[str, ...]
    roles: frozenset[Role]
    #: The local administrator (every role, on the host's authority), not a pamgate user.
    local: bool = False

    def has(self, role: Role) -> bool:
        return role in self.roles

    def missing(self, roles: frozenset[Role] | Role, to_do: str) -> str | None:
        """A plain sentence if the operator has none of ``roles`` for ``to_do``; else None."""
        wanted = frozenset({roles}) if isinstance(roles, Role) else roles
        if self.roles & wanted:
            return None
        needed = " or ".join(sorted(wanted))
        return f"You need the {needed} role to {to_do} (you are {self.describe_roles()})."

    def describe_roles(self) -> str:
        if self.local:
            return "the local administrator, with every role"
        return ", ".join(sorted(self.roles)) or "signed in with no role"

    def authority(self, roles: frozenset[Role]) -> str:
        """What allows this operator an action that needs one of ``roles``: the roles of
        theirs that do (``role:admin``), or ``local-admin``."""
        if self.local:
            return LOCAL_ADMIN_AUTHORITY
        return role_authority(self.roles & roles)


@dataclass(frozen=True)
class LocalAdmin:
    """Whoever runs ``pamgate`` on the gateway host, as that host's OS user."""

    os_user: str
    host: str

    @property
    def name(self) -> str:
        """``local-admin:<os-user>@<host>``, as the trail names them."""
        return local_admin_name(self.os_user, self.host)

    def operator(self) -> Operator:
        return Operator(self.name, (), ALL_ROLES, local=True)


def role_groups(config: GatewayConfig) -> dict[Role, frozenset[str]]:
    """The groups that give each role (see the module docstring)."""
    console = config.console
    rule_approvers = {group for rule in config.rules for group in rule.approver_groups}
    return {
        Role.APPROVER: frozenset(console.approver_groups) | rule_approvers,
        Role.AUDITOR: frozenset(console.auditor_groups),
        Role.ADMIN: frozenset(console.admin_groups),
    }


def roles_for(groups: Iterable[str], config: GatewayConfig) -> frozenset[Role]:
    """The roles these groups give."""
    member = set(groups)
    return frozenset(role for role, given_by in role_groups(config).items() if member & given_by)


def operator_of(user: UserView, config: GatewayConfig) -> Operator:
    """The operator a pamgate user is, with the roles their groups give now."""
    return Operator(user.name, user.groups, roles_for(user.groups, config))
