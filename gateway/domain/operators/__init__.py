"""Approvers, auditors and admins: who may do what, checked here for every front end.

An operator is a pamgate user acting through their roles, or the local
administrator (whoever runs ``pamgate`` on the gateway host), who holds every
role. :mod:`.roles` says which groups give which role; in short:

- ``approver``: approve and deny access requests;
- ``auditor``: read live sessions, recordings, break-glass cases and the audit
  trails, and record break-glass verdicts;
- ``admin``: terminate sessions, revoke grants, manage human and machine
  identities (and read what auditors read).

:class:`OperatorActions` is everything an operator can do, each action checked
against their roles *as they are now*: a pamgate user is read again before
every action, so a disabled operator, or one whose groups changed, gets the new
answer at once (:class:`OperatorSignedOut`, :class:`RoleMissing`). The console,
the CLI and the SSH-served administration all go through it, so they all give
the same answer. The rules that go beyond roles (never your own request,
approver groups of the rule, reviewer groups for break-glass) are the domain
services' own.

The events an action causes name the operator as their actor, with the roles
that allowed it as their authority (``role:admin``; ``local-admin`` for the
local administrator) and, given an :class:`ActionContext`, the session the
action came from (``via_session``). A refused change or audited read is itself
audited (``operator.refused``).

The actions are split by area: :mod:`.access_actions` (requests, grants,
sessions, break-glass, the policy), :mod:`.evidence_actions` (recordings, the
audit trails), :mod:`.identity_actions` (users and NHIs) and :mod:`.review_actions`
(the access report and review campaigns).
"""

from __future__ import annotations

from gateway.domain.operators.access_actions import AccessActions
from gateway.domain.operators.core import (
    ActionContext,
    ActionRefused,
    OperatorCore,
    OperatorServices,
)
from gateway.domain.operators.evidence_actions import AuditReader, EvidenceActions
from gateway.domain.operators.identity_actions import IdentityActions
from gateway.domain.operators.review_actions import ReviewActions
from gateway.domain.operators.roles import (
    ALL_ROLES,
    CHANGE,
    DECIDE_REQUESTS,
    READ_TRAILS,
    REVIEW_BREAKGLASS,
    SEE_BREAKGLASS,
    SEE_IDENTITIES,
    SEE_REQUESTS,
    SEE_SESSIONS,
    LocalAdmin,
    Operator,
    OperatorSignedOut,
    Role,
    RoleMissing,
    operator_of,
    role_groups,
    roles_for,
)


class OperatorActions(AccessActions, EvidenceActions, IdentityActions, ReviewActions):
    """What one operator may do (see the module docstring)."""


__all__ = [
    "ALL_ROLES",
    "CHANGE",
    "DECIDE_REQUESTS",
    "READ_TRAILS",
    "REVIEW_BREAKGLASS",
    "SEE_BREAKGLASS",
    "SEE_IDENTITIES",
    "SEE_REQUESTS",
    "SEE_SESSIONS",
    "ActionContext",
    "ActionRefused",
    "AuditReader",
    "LocalAdmin",
    "Operator",
    "OperatorActions",
    "OperatorCore",
    "OperatorServices",
    "OperatorSignedOut",
    "Role",
    "RoleMissing",
    "operator_of",
    "role_groups",
    "roles_for",
]
