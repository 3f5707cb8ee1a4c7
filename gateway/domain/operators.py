"""Approvers, auditors and admins: who may do what, checked here for every front end.

A person's roles come from their groups and the ``[console]`` settings:

- ``approver``: approve and deny access requests;
- ``auditor``: read live sessions, recordings, break-glass cases and the audit
  trails, and record break-glass verdicts;
- ``admin``: terminate sessions, revoke grants, manage human and machine
  identities (and read what auditors read).

:class:`OperatorActions` is everything a signed-in operator can do, each
action checked against their roles *as they are now*: the operator is read
again before every action, so a disabled operator, or one whose groups
changed, gets the new answer at once (:class:`OperatorSignedOut`,
:class:`RoleMissing`). The console, the CLI and the SSH-served administration
all go through it, so they all give the same answer. The rules that go
beyond roles (never your own request, approver groups of the rule, reviewer
groups for break-glass) are the domain services' own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from gateway.config import ConsoleSettings
from gateway.domain.approvals import AccessRequests, GrantView, RequestView
from gateway.domain.audit.trail import AuditLog, AuditRecord, Trail, VerifyResult
from gateway.domain.breakglass import BreakGlass, CaseView
from gateway.domain.identities import TotpEnrolment, UserDirectory, UserView
from gateway.domain.machines.registry import MachineRegistry, MachineView
from gateway.domain.machines.revocation import (
    MachineRevocations,
    OutstandingCertificate,
    Revocation,
)
from gateway.domain.recordings.service import (
    CommandHit,
    LoggedCommand,
    RecordingInfo,
    RecordingService,
)
from gateway.domain.sessions import LiveSession, SessionLedger
from gateway.errors import PamgateError


class Role(StrEnum):
    """A console role."""

    APPROVER = "approver"
    AUDITOR = "auditor"
    ADMIN = "admin"


#: Who may do what. The console's sections show themselves to the first four.
SEE_REQUESTS = frozenset({Role.APPROVER, Role.AUDITOR, Role.ADMIN})
SEE_BREAKGLASS = frozenset({Role.APPROVER, Role.AUDITOR, Role.ADMIN})
SEE_SESSIONS = frozenset({Role.AUDITOR, Role.ADMIN})
SEE_IDENTITIES = frozenset({Role.AUDITOR, Role.ADMIN})
DECIDE_REQUESTS = frozenset({Role.APPROVER})
REVIEW_BREAKGLASS = SEE_BREAKGLASS
CHANGE = frozenset({Role.ADMIN})


class RoleMissing(PamgateError):
    """The operator lacks the role an action needs (nothing changed)."""


class OperatorSignedOut(PamgateError):
    """The operator was disabled or removed since signing in: every action is refused."""


@dataclass(frozen=True)
class Operator:
    """Who is signed in, and what they may do."""

    name: str
    groups: tuple[str, ...]
    roles: frozenset[Role]

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


def operator_of(user: UserView, settings: ConsoleSettings) -> Operator:
    """The operator a signed-in user is."""
    return Operator(user.name, user.groups, roles_for(user.groups, settings))


@dataclass(frozen=True)
class OperatorServices:
    """The domain services operators act through."""

    settings: ConsoleSettings
    users: UserDirectory
    requests: AccessRequests
    breakglass: BreakGlass
    ledger: SessionLedger
    recordings: RecordingService
    audit: AuditLog
    machines: MachineRegistry
    machine_revocations: MachineRevocations


class OperatorActions:
    """What one signed-in operator may do (see the module docstring)."""

    def __init__(self, services: OperatorServices, name: str) -> None:
        self._services = services
        self._name = name

    @property
    def operator(self) -> Operator:
        """The operator as they are now; OperatorSignedOut if disabled or gone."""
        user = self._services.users.get(self._name)
        if user is None or user.disabled:
            raise OperatorSignedOut(f"{self._name} was disabled: signed out")
        return operator_of(user, self._services.settings)

    def require(self, roles: frozenset[Role], to_do: str) -> Operator:
        """The operator, if they now hold one of ``roles``; RoleMissing saying what is needed."""
        operator = self.operator
        missing = operator.missing(roles, to_do)
        if missing is not None:
            raise RoleMissing(missing)
        return operator

    # -- requests ------------------------------------------------------------------

    def pending_requests(self) -> list[RequestView]:
        """Pending requests, oldest first."""
        self.require(SEE_REQUESTS, "see requests")
        return list(reversed(self._services.requests.list(pending_only=True)))

    def recent_decisions(self, limit: int = 15) -> list[RequestView]:
        """Requests decided lately (approved, denied, expired, cancelled), newest first."""
        self.require(SEE_REQUESTS, "see requests")
        decided = self._services.requests.list(limit=40)
        return [request for request in decided if request.status != "pending"][:limit]

    def request(self, request_id: int) -> RequestView:
        self.require(SEE_REQUESTS, "see requests")
        return self._services.requests.get(request_id)

    def approve(self, request_id: int, comment: str = "") -> RequestView:
        operator = self.require(DECIDE_REQUESTS, "approve requests")
        return self._services.requests.approve(request_id, operator.name, comment)

    def deny(self, request_id: int, comment: str) -> RequestView:
        operator = self.require(DECIDE_REQUESTS, "deny requests")
        return self._services.requests.deny(request_id, operator.name, comment)

    # -- sessions and grants ---------------------------------------------------------

    def live_sessions(self) -> list[LiveSession]:
        self.require(SEE_SESSIONS, "see live sessions")
        return self._services.ledger.live()

    def session(self, session_id: str) -> LiveSession:
        self.require(SEE_SESSIONS, "see sessions")
        return self._services.ledger.get(session_id)

    def sessions_under(self, authority: str) -> list[LiveSession]:
        """Sessions (live or ended) that ran under ``authority`` (``grant:N``, ``breakglass:N``)."""
        self.require(SEE_BREAKGLASS | SEE_SESSIONS, "see sessions")
        return self._services.ledger.with_authority(authority)

    def terminate_session(self, session_id: str, reason: str) -> None:
        operator = self.require(CHANGE, "terminate sessions")
        self._services.ledger.request_termination(session_id, actor=operator.name, reason=reason)

    def revoke_grant(self, grant_id: int, reason: str) -> GrantView:
        operator = self.require(CHANGE, "revoke grants")
        return self._services.requests.revoke(grant_id, operator.name, reason)

    def grant_behind(self, authority: str) -> int | None:
        """The grant behind a session's authority (``grant:N``, ``breakglass:N``), if any."""
        self.require(CHANGE, "revoke grants")
        kind, _, number = authority.partition(";")[0].partition(":")
        if not number.isdigit():
            return None
        if kind == "grant":
            return int(number)
        if kind == "breakglass":
            return self._services.breakglass.get(int(number)).grant_id
        return None

    # -- break-glass ---------------------------------------------------------------------

    def breakglass_cases(self) -> list[CaseView]:
        self.require(SEE_BREAKGLASS, "see break-glass cases")
        return self._services.breakglass.list()

    def breakglass_case(self, case_id: int) -> CaseView:
        self.require(SEE_BREAKGLASS, "see break-glass cases")
        return self._services.breakglass.get(case_id)

    def review_breakglass(self, case_id: int, verdict: str, note: str) -> CaseView:
        operator = self.require(REVIEW_BREAKGLASS, "review break-glass cases")
        return self._services.breakglass.review(case_id, operator.name, verdict, note)

    # -- recordings ------------------------------------------------------------------------

    def recordings(
        self, *, user: str | None, target: str | None, since: datetime | None, limit: int
    ) -> list[RecordingInfo]:
        self.require(SEE_SESSIONS, "see recordings")
        return self._services.recordings.list(user=user, target=target, since=since, limit=limit)

    def search_commands(self, text: str) -> list[CommandHit]:
        self.require(SEE_SESSIONS, "search recordings")
        return self._services.recordings.search(text)

    def open_recording(self, session_ref: str, *, purpose: str) -> RecordingInfo:
        """A recording to replay or watch, checked against its seal; audited."""
        operator = self.require(SEE_SESSIONS, "replay recordings")
        return self._services.recordings.open_for_review(
            session_ref, actor=operator.name, purpose=purpose
        )

    def commands(self, session_id: str) -> list[LoggedCommand]:
        """The commands extracted from a session, in order."""
        self.require(SEE_SESSIONS, "see a session's commands")
        return self._services.recordings.commands(session_id)

    # -- the audit trails ----------------------------------------------------------------------

    def audit_reader(self) -> AuditReader:
        """Read access to the audit trails; each read checks the role again."""
        self.require(SEE_SESSIONS, "read the audit trails")
        return AuditReader(self, self._services.audit)

    def verify_trail(self, trail: Trail) -> VerifyResult:
        self.require(SEE_SESSIONS, "verify the audit trails")
        return self._services.audit.verify(trail)

    # -- identities --------------------------------------------------------------------------

    def users(self) -> list[UserView]:
        self.require(SEE_IDENTITIES, "see identities")
        return self._services.users.list_users()

    def machines(self) -> list[MachineView]:
        self.require(SEE_IDENTITIES, "see identities")
        return self._services.machines.list()

    def outstanding_certificates(self) -> list[OutstandingCertificate]:
        self.require(SEE_IDENTITIES, "see identities")
        return self._services.machine_revocations.outstanding()

    def set_user_disabled(self, name: str, disabled: bool) -> None:
        operator = self.require(CHANGE, "disable or enable users")
        self._services.users.set_disabled(name, disabled, actor=operator.name)

    def reset_mfa(self, name: str) -> TotpEnrolment:
        operator = self.require(CHANGE, "reset second factors")
        return self._services.users.reset_mfa(name, actor=operator.name)

    def set_machine_status(self, name: str, status: str, reason: str) -> MachineView:
        operator = self.require(CHANGE, "suspend or resume NHIs")
        return self._services.machines.set_status(name, status, actor=operator.name, reason=reason)

    def offboard_machine(self, name: str, reason: str) -> list[Revocation]:
        operator = self.require(CHANGE, "offboard NHIs")
        return self._services.machine_revocations.offboard(name, actor=operator.name, reason=reason)

    def revoke_machine(self, name: str, reason: str) -> list[Revocation]:
        operator = self.require(CHANGE, "revoke certificates")
        return self._services.machine_revocations.revoke(
            actor=operator.name, reason=reason, name=name
        )


class AuditReader:
    """The audit trails, read-only, for an operator who may read them."""

    def __init__(self, actions: OperatorActions, audit: AuditLog) -> None:
        self._actions = actions
        self._audit = audit

    def head(self, trail: Trail) -> tuple[int, str]:
        """The trail's newest sequence number and hash."""
        self._actions.require(SEE_SESSIONS, "read the audit trails")
        return self._audit.head(trail)

    def events(
        self, trail: Trail, *, after_seq: int = 0, until_seq: int | None = None
    ) -> Iterator[AuditRecord]:
        """The trail's events after ``after_seq`` up to ``until_seq``, oldest first."""
        self._actions.require(SEE_SESSIONS, "read the audit trails")
        return self._audit.events(trail, after_seq=after_seq, until_seq=until_seq)
