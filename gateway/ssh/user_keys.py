"""Publickey requests judged before asyncssh looks at them: both lanes' algorithm rules.

asyncssh verifies any signature a key type allows (SHA-1 ``ssh-rsa``
included) and never compares the algorithm a client asked for with the one
it signed with. :class:`ChecksUserKeys`, mixed into a lane's server
connection, puts every publickey request (query or signed) through
:func:`gateway.crypto.algorithms.user_auth_refusal` with the lane's
:class:`~gateway.crypto.algorithms.UserKeyRules` first; a refusal goes to the
lane's server (:class:`AuditsRefusedKeys`) to be audited with its reason,
and the client sees a plain publickey failure, as with sshd.

:class:`RefusesCertificates` is for a lane that takes no certificates at all
(the human lane): each offered certificate is reported, then refused.
"""

from __future__ import annotations

from gateway.crypto.algorithms import UserKeyRules, user_auth_refusal
from gateway.crypto.certificates import is_certificate


class AuditsRefusedKeys:
    """Server mixin: the lane's key rules, and where refused keys are reported."""

    @property
    def key_rules(self) -> UserKeyRules:
        """The user keys and signature algorithms the lane accepts."""
        raise NotImplementedError

    def key_refused(self, username: str, key_data: bytes, reason: str) -> None:
        """Audit a key refused by the lane's rules (once per key and reason is enough)."""
        raise NotImplementedError

    def certificate_offered(self, username: str, key_data: bytes) -> None:
        """Audit a certificate offered to a lane that takes none."""
        raise NotImplementedError


class ChecksUserKeys:
    """Server-connection mixin: the lane's key rules run before asyncssh's own checks."""

    _owner: object

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


class RefusesCertificates:
    """Server-connection mixin: no certificate is accepted; each one offered is reported."""

    _owner: object

    async def _validate_client_certificate(self, username: str, key_data: bytes) -> None:
        # asyncssh asks this of every key: only certificates are reported.
        if is_certificate(key_data) and isinstance(self._owner, AuditsRefusedKeys):
            self._owner.certificate_offered(username, key_data)
        return None
