"""Publickey requests judged before asyncssh looks at them: both lanes' algorithm rules.

asyncssh verifies any signature a key type allows (SHA-1 ``ssh-rsa``
included) and never compares the algorithm a client asked for with the one
it signed with. :class:`ChecksUserKeys`, mixed into a lane's server
connection, puts every publickey request (query or signed) through
:func:`gateway.crypto.algorithms.user_auth_refusal` with the lane's
:class:`~gateway.crypto.algorithms.UserKeyRules` first; a refusal goes to the
lane's server (:class:`AuditsRefusedKeys`) to be audited with its reason,
and the client sees a plain publickey failure, as with sshd. A certificate
goes to the lane's own admission (:meth:`AuditsRefusedKeys.admit_certificate`)
before asyncssh checks it again.

:func:`ssh_layer_refusal` says why asyncssh refused a certificate a lane's
own checks passed (both lanes judge certificates first, then let asyncssh
check them again).
"""

from __future__ import annotations

import ipaddress
from typing import cast

import asyncssh
from asyncssh.public_key import (
    CERT_TYPE_USER,
    KeyImportError,
    SSHOpenSSHCertificate,
    decode_ssh_certificate,
)

from gateway.crypto.algorithms import UserKeyRules, user_auth_refusal
from gateway.crypto.certificates import is_certificate
from gateway.domain.access import user_part


class AuditsRefusedKeys:
    """Server mixin: the lane's key rules, and where refused keys are reported."""

    @property
    def key_rules(self) -> UserKeyRules:
        """The user keys and signature algorithms the lane accepts."""
        raise NotImplementedError

    def key_refused(self, username: str, key_data: bytes, reason: str) -> None:
        """Audit a key refused by the lane's rules (once per key and reason is enough)."""
        raise NotImplementedError

    async def admit_certificate(self, username: str, key_data: bytes) -> bool:
        """The lane's verdict on a presented certificate (refusals audited by the lane)."""
        raise NotImplementedError


class ChecksUserKeys:
    """Server-connection mixin: the lane's key rules and certificate admission run before
    asyncssh's own checks."""

    _owner: object
    _peer_addr: str

    async def validate_public_key(
        self, username: str, key_data: bytes, msg: bytes, signature: bytes
    ) -> bool:
        owner = self._owner
        if not isinstance(owner, AuditsRefusedKeys):
            return False  # fail closed: a lane must say what it accepts
        refused = user_auth_refusal(owner.key_rules, key_data, msg, signature)
        if refused is not None:
            owner.key_refused(username, key_data, refused)
            return False
        validated: bool = await super().validate_public_key(  # type: ignore[misc]
            username, key_data, msg, signature
        )
        return validated

    async def _validate_client_certificate(
        self, username: str, key_data: bytes
    ) -> asyncssh.SSHKey | None:
        owner = self._owner
        if not is_certificate(key_data):
            return None  # a plain key: judged by the lane server's validate_public_key
        if not isinstance(owner, AuditsRefusedKeys) or not await owner.admit_certificate(
            username, key_data
        ):
            return None
        # The lane matched the principal against the user part of the login name
        # (alice:web01 and svc:db01 log in as alice and svc); asyncssh compares the whole name.
        principal = user_part(username)
        key: asyncssh.SSHKey | None = await super()._validate_client_certificate(  # type: ignore[misc]
            principal, key_data
        )
        if key is None:
            # asyncssh refused what the lane passed (it expired in between, say): audit why.
            owner.key_refused(username, key_data, ssh_layer_refusal(
                key_data, principal, self._peer_addr
            ))  # fmt: skip
        return key


def ssh_layer_refusal(key_data: bytes, principal: str, peer: str) -> str:
    """Why asyncssh refused a certificate the gate passed, found by running its checks again."""
    prefix = "the SSH layer refused the certificate"
    try:
        certificate = decode_ssh_certificate(key_data)
    except KeyImportError as exc:
        return f"{prefix}: {exc}"
    if not isinstance(certificate, SSHOpenSSHCertificate):
        return f"{prefix}: not an OpenSSH certificate"
    try:
        certificate.validate(CERT_TYPE_USER, principal)
    except ValueError as exc:
        return f"{prefix}: {exc}"
    networks = cast("list[ipaddress.IPv4Network | ipaddress.IPv6Network]",
                    certificate.options.get("source-address") or [])  # fmt: skip
    if networks:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return f"{prefix}: the client's address {peer[:60]!r} cannot be read"
        if not any(address in network for network in networks):
            return f"{prefix}: {address} is outside its source-address"
    return f"{prefix}: its CA key was not accepted"
