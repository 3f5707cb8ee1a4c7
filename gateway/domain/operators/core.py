"""What every operator action starts with: who the operator is now, whether they hold
the role the action needs, and the actor the events of the action name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from gateway.config import GatewayConfig
from gateway.domain.access import AccessDecisions
from gateway.domain.approvals import AccessRequests
from gateway.domain.audit.actors import ActingOperator
from gateway.domain.audit.checkpoints import CheckpointBook
from gateway.domain.audit.trail import ActorType, AuditEvent, AuditLog, Trail
from gateway.domain.breakglass import BreakGlass
from gateway.domain.identities import UserDirectory
from gateway.domain.lockout import FailureLimiter
from gateway.domain.login_certificates import LoginCertificates
from gateway.domain.machines.credentials import MachineCredentials
from gateway.domain.machines.registry import MachineRegistry
from gateway.domain.machines.revocation import MachineRevocations
from gateway.domain.operators.roles import (
    LocalAdmin,
    Operator,
    OperatorSignedOut,
    Role,
    RoleMissing,
    operator_of,
)
from gateway.domain.recordings.service import RecordingService
from gateway.domain.sessions import SessionLedger
from gateway.errors import PamgateError

if TYPE_CHECKING:  # the entitlement services use the roles: imported for their types only
    from gateway.domain.entitlements.analysis import Entitlements
    from gateway.domain.entitlements.campaigns import ReviewCampaigns


class ActionRefused(PamgateError):
    """An action the operator's roles allow, refused for what it would do (nothing changed)."""


@dataclass(frozen=True)
class OperatorServices:
    """The domain services operators act through."""

    config: GatewayConfig
    users: UserDirectory
    limiter: FailureLimiter
    access: AccessDecisions
    requests: AccessRequests
    breakglass: BreakGlass
    ledger: SessionLedger
    recordings: RecordingService
    audit: AuditLog
    checkpoints: CheckpointBook
    machines: MachineRegistry
    machine_credentials: MachineCredentials
    machine_revocations: MachineRevocations
    login_certificates: LoginCertificates
    #: The machine lane's host public key, one OpenSSH line (read from the data directory).
    machine_host_key: Callable[[], str]
    entitlements: Entitlements
    reviews: ReviewCampaigns


@dataclass(frozen=True)
class ActionContext:
    """Where an operator's actions come from, added to the details of every event they cause."""

    #: The gateway session that issued them (``ssh bob:admin@gw COMMAND``).
    via_session: str | None = None

    def details(self) -> dict[str, str]:
        return {"via_session": self.via_session} if self.via_session else {}


class OperatorCore:
    """One operator, and the checks every action of theirs starts with.

    The operator is a pamgate user (``who`` is their name), read again before
    every action, so a disabled operator, or one whose groups changed, gets
    the new answer at once; or the local administrator (``who`` is a
    :class:`LocalAdmin`), who holds every role.
    """

    def __init__(
        self,
        services: OperatorServices,
        who: str | LocalAdmin,
        *,
        context: ActionContext | None = None,
    ) -> None:
        self._services = services
        self._who = who
        self._context = context or ActionContext()

    @property
    def name(self) -> str:
        """The operator's name, as the trail records it."""
        return self._who.name if isinstance(self._who, LocalAdmin) else self._who

    @property
    def operator(self) -> Operator:
        """The operator as they are now; OperatorSignedOut if disabled or unknown."""
        if isinstance(self._who, LocalAdmin):
            return self._who.operator()
        user = self._services.users.get(self._who)
        if user is None:
            raise OperatorSignedOut(f"there is no pamgate user named {self._who!r}")
        if user.disabled:
            raise OperatorSignedOut(f"{self._who} was disabled: signed out")
        return operator_of(user, self._services.config)

    def require(self, roles: frozenset[Role], to_do: str) -> Operator:
        """The operator, if they now hold one of ``roles``; RoleMissing saying what is needed."""
        operator = self.operator
        missing = operator.missing(roles, to_do)
        if missing is not None:
            raise RoleMissing(missing)
        return operator

    def _acting(self, roles: frozenset[Role], to_do: str) -> ActingOperator:
        """The actor for an action that changes something or is itself audited (a replay,
        an export): checked like :meth:`require`, with the authority the roles give.

        A refusal is audited (``operator.refused``) before it reaches the caller: reads
        that are refused are not, as the console asks for them every second.
        """
        try:
            operator = self.require(roles, to_do)
        except (RoleMissing, OperatorSignedOut) as refused:
            self._services.audit.record(Trail.HUMAN, AuditEvent(
                actor=self._actor(self.name), actor_type=ActorType.ADMIN,
                action="operator.refused", outcome="refused", reason=str(refused),
                details={"attempted": to_do, "needs": sorted(roles)},
            ))  # fmt: skip
            raise
        return self._actor(operator.name, authority=operator.authority(roles))

    def _refuse(self, to_do: str, why: str) -> NoReturn:
        """Refuse an action the operator's roles allow but its object does not (disabling
        oneself): audited as ``operator.refused`` with the reason, then ActionRefused."""
        message = f"{self.name} may not {to_do}: {why}"
        self._services.audit.record(Trail.HUMAN, AuditEvent(
            actor=self._actor(self.name), actor_type=ActorType.ADMIN,
            action="operator.refused", outcome="refused", reason=message,
            details={"attempted": to_do},
        ))  # fmt: skip
        raise ActionRefused(message)

    def _actor(self, name: str, *, authority: str = "") -> ActingOperator:
        return ActingOperator(name, authority=authority, details=self._context.details())
