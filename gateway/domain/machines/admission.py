"""Who may use the machine lane, where, and to run what: the checks, without sockets.

:meth:`MachineGate.check` judges a presented certificate at least as
strictly as OpenSSH's sshd with ``TrustedUserCAKeys``, plus pamgate's own
rules, and names the first failed rule:

1-5. the checks both lanes share (:mod:`gateway.domain.certificate_checks`):
   a *user* certificate signed by the machine CA (and no other), with a CA
   signature algorithm and a key type sshd accepts (no SHA-1, no DSA, no
   security key), options as sshd reads them and no ``verify-required``,
   inside its validity window with no further skew, and the NHI in the login
   name among its principals; the NHI must be ``active``;
6. a lifetime no longer than the NHI's maximum plus the 60 s backdating, and
   no more than the maximum left from now (the backdating never extends the end);
7. the source inside the certificate's ``source-address`` and the NHI's networks;
8. serial, key id, key and CA key not revoked.

A certificate superseded by a renewal passes :meth:`MachineGate.check` with
``MachineLogin.lineage.superseded`` set: the lane lets the client prove it
holds the key, and only then locks the NHI as a copied credential.

:meth:`MachineGate.destination` and :meth:`MachineGate.command` then hold
each session to the NHI's scope: its target accounts, its commands (with a
``force-command``, only that command, which must be in scope too; no
command means the forced one), and no pty unless allowed.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from gateway.config import GatewayConfig, TargetSettings
from gateway.crypto.algorithms import MACHINE_LANE_KEYS
from gateway.crypto.certificate_options import UserOptions
from gateway.crypto.certificates import PresentedCertificate
from gateway.crypto.machine_ca import BACKDATE_SECONDS, MachineCA
from gateway.domain.access import parse_login_name, user_part
from gateway.domain.certificate_checks import (
    CertificateRefused,
    TrustedCA,
    check_source_address,
    check_user_certificate,
    client_address,
)
from gateway.domain.machines.credentials import CertificateLineage, MachineCredentials
from gateway.domain.machines.registry import MachineError, MachineRegistry, MachineView
from gateway.domain.machines.revocation import MachineRevocations
from gateway.errors import PamgateError


class MachineAuthRefused(CertificateRefused):
    """A certificate may not log in; the message is the reason, for the machine trail."""


class ScopeRefused(PamgateError):
    """A session asked for something outside its NHI's scope; the message says what."""


@dataclass(frozen=True)
class MachineLogin:
    """An accepted machine-lane login."""

    nhi: MachineView
    certificate: PresentedCertificate
    #: The certificate's options, understood and checked.
    options: UserOptions
    lineage: CertificateLineage | None


class MachineGate:
    """Applies the machine lane's certificate and scope rules."""

    def __init__(
        self,
        registry: MachineRegistry,
        credentials: MachineCredentials,
        revocations: MachineRevocations,
        ca: MachineCA,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        self._credentials = credentials
        self._revocations = revocations
        self._ca = ca
        self._clock = clock

    def check(self, login_name: str, cert: PresentedCertificate, *, source: str) -> MachineLogin:
        """Accept ``cert`` for ``login_name`` from ``source``, or raise MachineAuthRefused."""
        name = user_part(login_name)
        now = self._clock()
        trusted = TrustedCA(self._ca.public_key_data(), "machine CA", MACHINE_LANE_KEYS)
        try:
            options = check_user_certificate(cert, trusted, principal=name, now=now)
        except CertificateRefused as exc:
            raise MachineAuthRefused(str(exc)) from None
        try:
            nhi = self._registry.get(name)
        except MachineError:
            raise MachineAuthRefused(f"{name!r} is not a registered machine identity") from None
        if nhi.status != "active":
            raise MachineAuthRefused(f"{name} is {nhi.status}")
        if cert.lifetime_seconds > nhi.max_ttl_seconds + BACKDATE_SECONDS:
            raise MachineAuthRefused(
                f"the certificate's lifetime ({cert.lifetime_seconds} s) exceeds {name}'s "
                f"maximum of {nhi.max_ttl_seconds} s"
            )
        # The backdating allowance is for the start only: from now on, no more than the maximum.
        if cert.valid_before - now > nhi.max_ttl_seconds:
            raise MachineAuthRefused(
                f"the certificate is valid for {int(cert.valid_before - now)} s from now, which "
                f"exceeds {name}'s maximum of {nhi.max_ttl_seconds} s"
            )
        try:
            check_source_address(options, source)
        except CertificateRefused as exc:
            raise MachineAuthRefused(str(exc)) from None
        address = client_address(source)
        if nhi.sources and (
            address is None
            or not any(address in ipaddress.ip_network(n, strict=False) for n in nhi.sources)
        ):
            raise MachineAuthRefused(f"source {source} is outside {name}'s allowed networks")
        revoked = self._revocations.revocation_reason(cert)
        if revoked:
            raise MachineAuthRefused(revoked)
        return MachineLogin(nhi, cert, options, self._credentials.lineage_of(cert))

    def revoked_because(self, login: MachineLogin, *, status: str | None = None) -> str | None:
        """Why a live session must end now (NHI no longer active, certificate revoked).

        ``status`` is the NHI's status when the caller has read it already
        (the session watch reads all live NHIs' at once).
        """
        if status is None:
            status = self._registry.get(login.nhi.name).status
        if status != "active":
            return f"{login.nhi.name} was {status}"
        return self._revocations.revocation_reason(login.certificate)

    def refreshed(self, login: MachineLogin) -> MachineLogin:
        """``login`` with its NHI as it is now: a connection may outlive a change of scope
        (a review narrowed it), and each new session is judged by the scope of its time."""
        try:
            nhi = self._registry.get(login.nhi.name)
        except MachineError:
            raise ScopeRefused(f"{login.nhi.name} is no longer a registered identity") from None
        return replace(login, nhi=nhi)

    @staticmethod
    def out_of_scope_because(
        nhi: MachineView, target: str, account: str, command: str | None
    ) -> str | None:
        """Why a live session admitted for ``account@target`` running ``command`` (None for
        SFTP) is outside ``nhi``'s scope as it is now, or None while it is inside."""
        if not any(t.target == target and t.account == account for t in nhi.targets):
            return f"{account}@{target} was removed from {nhi.name}'s scope"
        if command is None:
            if not nhi.allow_sftp:
                return f"SFTP was removed from {nhi.name}'s scope"
        elif not nhi.command_allowed(command):
            return f"the command {command[:200]!r} was removed from {nhi.name}'s scope"
        return None

    def new_session_refused_because(self, login: MachineLogin) -> str | None:
        """Why an authenticated connection may not open another session, or None.

        Stricter than for live sessions: the certificate must also still be
        valid and not superseded by a renewal (a live session outlives both,
        as it would with sshd).
        """
        reason = self.revoked_because(login)
        if reason:
            return reason
        if self._clock() >= login.certificate.valid_before:
            return "the certificate has expired"
        lineage = self._credentials.lineage_of(login.certificate)
        if lineage is not None and lineage.superseded:
            return "the certificate was replaced by a renewal; use the new one"
        return None

    @staticmethod
    def destination(
        login: MachineLogin, login_name: str, config: GatewayConfig
    ) -> tuple[TargetSettings, str]:
        """The target and account the login name asks for, if the NHI's scope has it."""
        nhi = login.nhi
        asked = parse_login_name(login_name)
        scope = [(t.target, t.account) for t in nhi.targets]
        choices = ", ".join(f"{nhi.name}:{account}@{target}" for target, account in scope)
        if asked.target is None:
            if len(scope) != 1:
                raise ScopeRefused(f"name a target in the login name: one of {choices}")
            target_name, account = scope[0]
        else:
            target_name = asked.target
            accounts = [account for target, account in scope if target == target_name]
            if asked.account:
                account = asked.account
            elif len(accounts) == 1:
                account = accounts[0]
            else:
                raise ScopeRefused(f"{target_name} is not in {nhi.name}'s scope: use {choices}")
            if (target_name, account) not in scope:
                raise ScopeRefused(
                    f"{account}@{target_name} is not in {nhi.name}'s scope: use {choices}"
                )
        target = config.target(target_name)
        if target is None:
            raise ScopeRefused(f"target {target_name!r} is no longer in the gateway's config")
        return target, account

    @staticmethod
    def command(login: MachineLogin, requested: str | None, *, pty: bool) -> str:
        """The command to run for ``requested``, or ScopeRefused saying why not."""
        nhi = login.nhi
        MachineGate.check_pty(login, pty)
        # Stricter than sshd, which runs the forced command whatever was asked:
        # asking for something else is refused, so a job learns it is out of scope.
        forced = login.options.force_command
        if forced is not None:
            if requested is not None and requested != forced:
                raise ScopeRefused(f"this certificate may only run: {forced[:200]}")
            requested = forced
        if requested is None:
            raise ScopeRefused(
                "the machine lane runs commands only: give one, as in ssh ... 'COMMAND'"
            )
        if not nhi.command_allowed(requested):
            raise ScopeRefused(f"command not in {nhi.name}'s scope: {requested[:200]!r}")
        return requested

    @staticmethod
    def check_pty(login: MachineLogin, pty: bool) -> None:
        """ScopeRefused for a pty unless both the NHI and its certificate allow one."""
        nhi = login.nhi
        if pty and not (nhi.allow_pty and "permit-pty" in login.options.extensions):
            raise ScopeRefused(f"a terminal (pty) is not allowed for {nhi.name}: run without -t")

