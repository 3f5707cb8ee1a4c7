"""What changed for a set of live sessions: the facts every lane's watch acts on.

A live session depends on things that can change under it: a termination
asked for from the console, its user disabled or their groups changed, its
grant revoked, its NHI suspended or offboarded, the login certificate its
connection signed in with revoked. :class:`LiveCheckReader` reads them for every
watched session at once, one query per kind; the watch
(:mod:`gateway.ssh.watch`) then asks each session what they mean for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gateway.domain.approvals import AccessRequests
from gateway.domain.identities import UserDirectory, UserView
from gateway.domain.login_certificates import LoginCertificates
from gateway.domain.machines.registry import MachineRegistry, MachineView
from gateway.domain.sessions import SessionLedger


@dataclass(frozen=True)
class WatchSubject:
    """What a live session depends on, for a round's queries."""

    session_id: str | None
    #: The human the session runs as (human lane).
    user: str | None = None
    #: The grant it runs under, if any (human lane).
    grant_id: int | None = None
    #: The NHI it runs as (machine lane).
    nhi: str | None = None
    #: The serial of the login certificate its connection signed in with (human lane).
    login_certificate: int | None = None


@dataclass(frozen=True)
class LiveChecks:
    """What changed for a set of live sessions, read in one query per kind."""

    #: Session id -> why someone asked for it to end.
    terminations: Mapping[str, str] = field(default_factory=dict)
    #: Users that are disabled or no longer exist.
    disabled_users: frozenset[str] = frozenset()
    #: The enabled users, as they are now (groups changed since login count).
    enabled_users: Mapping[str, UserView] = field(default_factory=dict)
    #: Grant id -> revocation reason, for revoked grants.
    revoked_grants: Mapping[int, str] = field(default_factory=dict)
    #: NHI name -> the NHI as it is now (status, scope); removed ones are absent.
    machines: Mapping[str, MachineView] = field(default_factory=dict)
    #: Login certificate serial -> why it was revoked, for revoked ones.
    revoked_login_certificates: Mapping[int, str] = field(default_factory=dict)


class LiveCheckReader:
    """Reads :class:`LiveChecks` for a set of live sessions, one query per kind."""

    def __init__(
        self,
        ledger: SessionLedger,
        users: UserDirectory,
        requests: AccessRequests,
        machines: MachineRegistry,
        login_certificates: LoginCertificates,
    ) -> None:
        self._ledger = ledger
        self._users = users
        self._requests = requests
        self._machines = machines
        self._login_certificates = login_certificates

    def read(self, subjects: Iterable[WatchSubject]) -> LiveChecks:
        """Read the checks for ``subjects``. Raises StoreError if the database fails."""
        subjects = list(subjects)
        session_ids = {s.session_id for s in subjects if s.session_id is not None}
        users = {s.user for s in subjects if s.user is not None}
        grants = {s.grant_id for s in subjects if s.grant_id is not None}
        nhis = {s.nhi for s in subjects if s.nhi is not None}
        serials = {s.login_certificate for s in subjects if s.login_certificate is not None}
        enabled = self._users.enabled_among(users)
        return LiveChecks(
            terminations=self._ledger.termination_requests(session_ids),
            disabled_users=frozenset(name for name in users if name not in enabled),
            enabled_users=enabled,
            revoked_grants=self._requests.revoked_among(grants),
            machines=self._machines.views(nhis),
            revoked_login_certificates=self._login_certificates.revoked_among(serials),
        )
