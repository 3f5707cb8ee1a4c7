"""Operator actions on identities: the people who log in through the human lane, and
the non-human identities (NHIs) of the machine lane with their certificates, join
tokens and revocations. Seeing them needs the auditor or admin role; changing them
needs admin."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from gateway.crypto.machine_ca import SignedCertificate
from gateway.domain.audit.trail import ActorType, admin_authority
from gateway.domain.identities import TotpEnrolment, UserView
from gateway.domain.login_certificates import OutstandingLoginCertificate
from gateway.domain.machines.registry import DEFAULT_MAX_TTL, MachineView, ScopeTarget
from gateway.domain.machines.revocation import KrlWritten, OutstandingCertificate, Revocation
from gateway.domain.operators.core import OperatorCore
from gateway.domain.operators.roles import CHANGE, SEE_IDENTITIES
from gateway.errors import UnknownUser


class IdentityActions(OperatorCore):
    """Users and NHIs (see :class:`OperatorCore`)."""

    # -- people ------------------------------------------------------------------------

    def users(self) -> list[UserView]:
        """Every user, by name. Auditor or admin."""
        self.require(SEE_IDENTITIES, "see identities")
        return self._services.users.list_users()

    def add_user(
        self,
        name: str,
        *,
        groups: Iterable[str] = (),
        password: str | None = None,
        public_keys: Iterable[str] = (),
    ) -> TotpEnrolment:
        """Create a user; their TOTP enrolment. Admin."""
        actor = self._acting(CHANGE, "add users")
        return self._services.users.add_user(
            name, actor=actor, groups=groups, password=password, public_keys=public_keys
        )

    def set_user_disabled(self, name: str, disabled: bool, *, reason: str = "") -> None:
        """Disable a user (their sessions end within 2 s) or enable them again, with the
        reason for the trail. Admin; never oneself (a refusal, audited): an admin who
        disabled themselves would be signed out with nobody having decided it."""
        actor = self._acting(CHANGE, "disable or enable users")
        if disabled and name == str(actor):
            self._refuse("disable yourself", "another admin must disable you")
        self._services.users.set_disabled(name, disabled, actor=actor, reason=reason)

    def reset_mfa(self, name: str) -> TotpEnrolment:
        """Give a user a new TOTP secret; the old one stops working. Admin."""
        actor = self._acting(CHANGE, "reset second factors")
        return self._services.users.reset_mfa(name, actor=actor)

    def log_out_user(self, name: str) -> list[int]:
        """Revoke every login certificate of a user (``pamgate-login``); live sessions signed
        in with one end within 2 s. The serials revoked. Admin."""
        actor = self._acting(CHANGE, "log users out")
        self._require_user(name)
        return self._services.login_certificates.log_out(
            name, actor=actor, actor_type=ActorType.ADMIN, authority=admin_authority(actor),
            source=None,
        )  # fmt: skip

    def login_certificates(self, name: str | None = None) -> list[OutstandingLoginCertificate]:
        """Login certificates neither expired nor revoked (of one user, or all). Auditor or
        admin."""
        self.require(SEE_IDENTITIES, "see identities")
        return self._services.login_certificates.outstanding(name)

    def set_user_groups(self, name: str, groups: Iterable[str]) -> None:
        """Replace a user's groups (which decide their access and their roles). Admin."""
        actor = self._acting(CHANGE, "change users' groups")
        self._services.users.set_groups(name, groups, actor=actor)

    def set_password(self, name: str, password: str) -> None:
        """Set a user's password. Admin."""
        actor = self._acting(CHANGE, "set passwords")
        self._services.users.set_password(name, password, actor=actor)

    def add_user_key(self, name: str, public_key_line: str) -> str:
        """Register a public key (a first factor) for a user; its fingerprint. Admin."""
        actor = self._acting(CHANGE, "register users' keys")
        return self._services.users.add_key(name, public_key_line, actor=actor)

    def unlock_user(self, name: str) -> int:
        """Forget a user's failed sign-ins at every address; how many addresses had some.
        Admin."""
        actor = self._acting(CHANGE, "unlock users")
        self._require_user(name)
        return self._services.limiter.unlock(name, actor=actor)

    def user_exists(self, name: str) -> bool:
        """Whether a user of that name exists (asked before a password is typed). Admin."""
        self.require(CHANGE, "manage users")
        return self._services.users.get(name) is not None

    def _require_user(self, name: str) -> None:
        # The lockout service keeps counters for any name (unknown ones included).
        if self._services.users.get(name) is None:
            raise UnknownUser(f"no user named {name!r}")

    # -- NHIs ------------------------------------------------------------------------

    def machines(self) -> list[MachineView]:
        """Every NHI, by name. Auditor or admin."""
        self.require(SEE_IDENTITIES, "see identities")
        return self._services.machines.list()

    def machine(self, name: str) -> MachineView:
        """One NHI. Auditor or admin."""
        self.require(SEE_IDENTITIES, "see identities")
        return self._services.machines.get(name)

    def outstanding_certificates(self, name: str | None = None) -> list[OutstandingCertificate]:
        """Machine certificates in use (of one NHI, or all). Auditor or admin."""
        self.require(SEE_IDENTITIES, "see identities")
        return self._services.machine_revocations.outstanding(name)

    def add_machine(
        self,
        name: str,
        *,
        kind: str,
        owner: str,
        tech_owner: str,
        purpose: str,
        targets: Iterable[ScopeTarget],
        commands: Iterable[str],
        sources: Iterable[str] = (),
        allow_pty: bool = False,
        allow_sftp: bool = False,
        max_ttl_seconds: int = DEFAULT_MAX_TTL,
        review_by: datetime | None = None,
        sftp_paths: Iterable[str] | None = None,
    ) -> MachineView:
        """Register an NHI with its owners and scope. Admin."""
        actor = self._acting(CHANGE, "register NHIs")
        return self._services.machines.add(
            name, actor=actor, kind=kind, owner=owner, tech_owner=tech_owner, purpose=purpose,
            targets=targets, commands=commands, sources=sources, allow_pty=allow_pty,
            allow_sftp=allow_sftp, max_ttl_seconds=max_ttl_seconds, review_by=review_by,
            sftp_paths=sftp_paths,
        )  # fmt: skip

    def set_machine_status(self, name: str, status: str, reason: str) -> MachineView:
        """Suspend an NHI (its sessions end within 2 s) or resume it. Admin."""
        actor = self._acting(CHANGE, "suspend or resume NHIs")
        return self._services.machines.set_status(name, status, actor=actor, reason=reason)

    def offboard_machine(self, name: str, reason: str) -> list[Revocation]:
        """Retire an NHI for good, revoking everything outstanding. Admin."""
        actor = self._acting(CHANGE, "offboard NHIs")
        return self._services.machine_revocations.offboard(name, actor=actor, reason=reason)

    def revoke_machine(self, name: str, reason: str) -> list[Revocation]:
        """Revoke every outstanding certificate of an NHI. Admin."""
        return self.revoke_certificates(reason=reason, name=name)

    def revoke_certificates(
        self,
        *,
        reason: str,
        name: str | None = None,
        serial: int | None = None,
        key_id: str | None = None,
        key_line: str | None = None,
    ) -> list[Revocation]:
        """Revoke one thing: an NHI's outstanding certificates, a serial, a key id or a key;
        the new revocations. Admin."""
        actor = self._acting(CHANGE, "revoke certificates")
        return self._services.machine_revocations.revoke(
            actor=actor, reason=reason, name=name, serial=serial, key_id=key_id,
            key_line=key_line,
        )  # fmt: skip

    def issue_certificate(
        self, name: str, public_key_line: str, ttl_seconds: int
    ) -> SignedCertificate:
        """Sign a short-lived certificate for an NHI's key, within its scope. Admin."""
        actor = self._acting(CHANGE, "issue machine certificates")
        return self._services.machine_credentials.issue(
            name, public_key_line, ttl_seconds, actor=actor
        )

    def create_join_token(self, name: str, *, ttl_seconds: int, uses: int) -> str:
        """A join token for an NHI (shown once; only its hash is kept). Admin."""
        actor = self._acting(CHANGE, "make join tokens")
        return self._services.machine_credentials.create_join_token(
            name, ttl_seconds=ttl_seconds, uses=uses, actor=actor
        )

    def write_krl(self, path: Path) -> KrlWritten:
        """Write an OpenSSH KRL of every revoked machine certificate: how many entries, and
        old ones no KRL can hold, left out. Auditor or admin: it publishes what admins
        revoked."""
        self.require(SEE_IDENTITIES, "read the machine revocations")
        return self._services.machine_revocations.write_krl(path)

    def machine_host_key(self) -> str:
        """The machine lane's host public key, one OpenSSH line. Auditor or admin."""
        self.require(SEE_IDENTITIES, "see identities")
        return self._services.machine_host_key()
