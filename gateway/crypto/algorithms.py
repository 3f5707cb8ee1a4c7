"""Which user keys and signatures the lanes accept: OpenSSH 9.2 sshd's defaults, checked.

The reference is what ``sshd -T`` prints for a stock OpenSSH 9.2:
``PubkeyAcceptedAlgorithms``, ``CASignatureAlgorithms`` and
``RequiredRSASize 1024``. So no SHA-1 (``ssh-rsa``) signatures, no DSA
(``ssh-dss``) keys, no RSA keys under 1024 bits, and nothing sshd does not
know (``ssh-ed448``, the ``@ssh.com`` RSA variants).

asyncssh verifies any signature a key type allows, including ``ssh-rsa``
(SHA-1), and never compares the algorithm a client named in its request
with the signature it sent. :func:`user_auth_refusal` does what sshd's
``userauth_pubkey`` does before it verifies anything: the requested
algorithm must be accepted, match the key's type, and be the algorithm the
signature is made with (auth2-pubkey.c, ``sshkey_verify`` with ``pkalg``).

:class:`UserKeyRules` says which algorithms a lane takes; the machine lane
also refuses FIDO security keys (``sk-*``), which need a person's touch.
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncssh.packet import PacketDecodeError, SSHPacket

CERT_SUFFIX = "-cert-v01@openssh.com"
#: sshd 9.2's default PubkeyAcceptedAlgorithms, as signature algorithms.
SSHD_USER_SIGNATURE_ALGORITHMS = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-256",
)
#: sshd 9.2's default CASignatureAlgorithms (the same list).
CA_SIGNATURE_ALGORITHMS = frozenset(SSHD_USER_SIGNATURE_ALGORITHMS)
SECURITY_KEY_ALGORITHMS = frozenset({"sk-ssh-ed25519@openssh.com",
                                     "sk-ecdsa-sha2-nistp256@openssh.com"})  # fmt: skip
#: The signature a WebAuthn client makes with an sk-ecdsa key (sshd takes it for that key).
WEBAUTHN_SIGNATURE = "webauthn-sk-ecdsa-sha2-nistp256@openssh.com"
#: sshd 9.2's RequiredRSASize.
MIN_RSA_BITS = 1024
#: Why the best-known refused algorithms are refused, for audit reasons.
_WEAK = {"ssh-rsa": "SHA-1", "ssh-dss": "DSA, SHA-1"}
_MSG_USERAUTH_REQUEST = 50


def key_type_of(algorithm: str) -> str:
    """The key type an algorithm name belongs to (``rsa-sha2-256`` is an ``ssh-rsa`` key)."""
    plain = algorithm.removesuffix(CERT_SUFFIX)
    return "ssh-rsa" if plain.startswith("rsa-sha2-") else plain


def _named(algorithm: str) -> str:
    weak = _WEAK.get(algorithm.removesuffix(CERT_SUFFIX))
    return f"{algorithm[:80]} ({weak})" if weak else repr(algorithm[:80])


@dataclass(frozen=True)
class UserKeyRules:
    """The user keys and signature algorithms one lane accepts."""

    #: Whether FIDO security keys (``sk-*``) may log in.
    security_keys: bool

    @property
    def signature_algorithms(self) -> tuple[str, ...]:
        """The algorithms a client may name in a request (sshd's PubkeyAcceptedAlgorithms)."""
        return tuple(
            alg for alg in SSHD_USER_SIGNATURE_ALGORITHMS
            if self.security_keys or alg not in SECURITY_KEY_ALGORITHMS
        )  # fmt: skip

    @property
    def advertised(self) -> tuple[str, ...]:
        """What the lane advertises in ``server-sig-algs`` (WebAuthn too, with security keys)."""
        webauthn = (WEBAUTHN_SIGNATURE,) if self.security_keys else ()
        return self.signature_algorithms + webauthn

    def key_refusal(self, key_type: str, rsa_bits: int | None) -> str | None:
        """Why a key (or a certificate's key) of this type and size is refused, or None."""
        accepted = {key_type_of(alg) for alg in self.signature_algorithms}
        if key_type not in accepted:
            if key_type in SECURITY_KEY_ALGORITHMS:
                return f"security keys ({key_type}) are not accepted here"
            return f"{_named(key_type)} keys are not accepted"
        if key_type == "ssh-rsa" and (rsa_bits is None or rsa_bits < MIN_RSA_BITS):
            return f"an RSA key of {rsa_bits} bits is refused (at least {MIN_RSA_BITS})"
        return None

    def public_key_refusal(self, blob: bytes) -> str | None:
        """Why a public key blob is refused (its type and size), or None."""
        facts = public_key_facts(blob)
        if facts is None:
            return "the public key cannot be read"
        return self.key_refusal(facts.key_type, facts.rsa_bits)

    def request_refusal(
        self, requested: str, key_blob_type: str, signature_algorithm: str
    ) -> str | None:
        """Why a signed publickey request is refused, or None (sshd's checks, in its order).

        ``requested`` is the algorithm the client named, ``key_blob_type`` the
        type inside the key (or certificate) it sent, ``signature_algorithm``
        the one its signature says.
        """
        certificate = requested.endswith(CERT_SUFFIX)
        if requested.removesuffix(CERT_SUFFIX) not in self.signature_algorithms:
            return f"the signature algorithm {_named(requested)} is refused"
        wanted_blob = key_type_of(requested) + (CERT_SUFFIX if certificate else "")
        if key_blob_type != wanted_blob:
            return f"the key ({key_blob_type[:80]!r}) does not match the algorithm {requested!r}"
        expected = requested.removesuffix(CERT_SUFFIX)
        if signature_algorithm != expected and not (
            expected == "sk-ecdsa-sha2-nistp256@openssh.com"
            and signature_algorithm == WEBAUTHN_SIGNATURE
        ):
            return (
                f"the signature is made with {_named(signature_algorithm)}, not the "
                f"{requested.removesuffix(CERT_SUFFIX)!r} the client asked for"
            )
        return None


#: The human lane: what sshd accepts, security keys included.
HUMAN_LANE_KEYS = UserKeyRules(security_keys=True)
#: The machine lane: no security keys (unattended workloads have no finger to touch one).
MACHINE_LANE_KEYS = UserKeyRules(security_keys=False)


def ca_signature_refusal(algorithm: str) -> str | None:
    """Why a certificate's CA signature algorithm is refused (CASignatureAlgorithms), or None."""
    if algorithm in CA_SIGNATURE_ALGORITHMS:
        return None
    return f"the CA signature uses {_named(algorithm)}, which is refused"


@dataclass(frozen=True)
class PublicKeyFacts:
    """What the rules need of a public key or certificate blob."""

    #: The blob's own type (``ssh-ed25519``, ``ssh-rsa-cert-v01@openssh.com``...).
    blob_type: str
    #: The type of the key itself (a certificate's certified key).
    key_type: str
    #: The RSA modulus size, for RSA keys.
    rsa_bits: int | None


def public_key_facts(blob: bytes) -> PublicKeyFacts | None:
    """The type and RSA size of a public key or certificate blob; None if unreadable."""
    try:
        packet = SSHPacket(blob)
        blob_type = packet.get_string().decode("ascii")
        rsa_bits = None
        if key_type_of(blob_type) == "ssh-rsa":
            if blob_type.endswith(CERT_SUFFIX):
                packet.get_string()  # the nonce
            packet.get_mpint()  # e
            rsa_bits = packet.get_mpint().bit_length()
    except (PacketDecodeError, UnicodeDecodeError):
        return None
    return PublicKeyFacts(blob_type, key_type_of(blob_type), rsa_bits)


def user_auth_refusal(
    rules: UserKeyRules, key_blob: bytes, request: bytes, signature: bytes
) -> str | None:
    """Why a publickey request is refused before any signature is checked, or None.

    ``request`` is the signed part of a ``USERAUTH_REQUEST`` (empty for a
    query, which names no signature: then only the key is judged) and
    ``signature`` the signature blob, as asyncssh hands them to the server.
    """
    refused = rules.public_key_refusal(key_blob)
    if refused or not request:
        return refused
    facts = public_key_facts(key_blob)
    assert facts is not None  # public_key_refusal read it
    try:
        packet = SSHPacket(request)
        if packet.get_byte() != _MSG_USERAUTH_REQUEST:
            return "malformed publickey request"
        for _ in range(3):  # user name, service, method
            packet.get_string()
        packet.get_boolean()
        requested = packet.get_string().decode("ascii")
        signature_algorithm = SSHPacket(signature).get_string().decode("ascii")
    except (PacketDecodeError, UnicodeDecodeError):
        return "malformed publickey request"
    return rules.request_refusal(requested, facts.blob_type, signature_algorithm)
