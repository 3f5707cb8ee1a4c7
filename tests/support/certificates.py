"""Certificates a hostile signer would make, and a hostile client to present them.

``ssh-keygen -s`` refuses to write most malformed certificates (a bad
``source-address``, a NUL in a principal, a flag option with data);
:func:`crafted_certificate` writes any of them, field by field
(PROTOCOL.certkeys), signed with a real CA key, so the result is exactly as
trustworthy as the CA makes it. :func:`raw_login` presents a certificate with
asyncssh and signs with whatever algorithm it is told to, whatever the
server advertises: what a hostile client does and the stock ``ssh`` will not.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
from asyncssh.packet import String, UInt32, UInt64

CERT_SUFFIX = b"-cert-v01@openssh.com"


def keygen_sign(ca_key: Path, key: Path, *args: str, key_id: str = "keygen") -> Path:
    """Sign ``key``'s public half with stock ``ssh-keygen -s``; returns the ``-cert.pub`` path."""
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(ca_key), "-I", key_id, *args, str(key.with_suffix(".pub"))],
        check=True, capture_output=True,
    )  # fmt: skip
    return key.with_name(key.name + "-cert.pub")


def string(value: bytes | str) -> bytes:
    """An SSH string: what a ``force-command`` or ``source-address`` option's data holds."""
    return String(value)


@dataclass
class Crafted:
    """Every field of a user certificate, as a hostile CA operator may fill it."""

    principals: Sequence[bytes | str] = ()
    key_id: bytes | str = b"crafted"
    serial: int = 0
    cert_type: int = 1
    #: Seconds relative to now.
    valid_after: int = -60
    valid_before: int = 300
    critical: Sequence[tuple[bytes | str, bytes]] = field(default_factory=list)
    extensions: Sequence[tuple[bytes | str, bytes]] = field(default_factory=list)
    #: The CA's signature algorithm (default: the key's own; rsa-sha2-512 for RSA).
    signature_algorithm: bytes | None = None


def crafted_certificate(ca_key: Path, key: Path, spec: Crafted) -> str:
    """A certificate line for ``key``'s public key, signed by ``ca_key`` as ``spec`` says."""
    ca = asyncssh.read_private_key(ca_key)
    user = asyncssh.read_public_key(key.with_suffix(".pub"))
    algorithm = user.algorithm + CERT_SUFFIX
    now = int(time.time())
    body = b"".join((
        String(algorithm), String(os.urandom(32)), user.encode_ssh_public(),
        UInt64(spec.serial), UInt32(spec.cert_type), String(spec.key_id),
        String(b"".join(String(p) for p in spec.principals)),
        UInt64(now + spec.valid_after), UInt64(now + spec.valid_before),
        String(b"".join(String(n) + String(d) for n, d in spec.critical)),
        String(b"".join(String(n) + String(d) for n, d in spec.extensions)),
        String(b""), String(ca.public_data),
    ))  # fmt: skip
    signature_algorithm = spec.signature_algorithm or (
        b"rsa-sha2-512" if ca.algorithm == b"ssh-rsa" else ca.algorithm
    )
    blob = body + String(ca.sign(body, signature_algorithm))
    return f"{algorithm.decode()} {base64.b64encode(blob).decode()} crafted"


class _ForcedKeyClient(asyncssh.SSHClient):
    """Offers one key pair once, signing with the algorithm it was given."""

    def __init__(self, pair: asyncssh.SSHKeyPair) -> None:
        self._pair: asyncssh.SSHKeyPair | None = pair
        self._conn: asyncssh.SSHClientConnection | None = None

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self._conn = conn

    def public_key_auth_requested(self) -> asyncssh.SSHKeyPair | None:
        pair, self._pair = self._pair, None
        if pair is not None and self._conn is not None:
            # asyncssh would pick an algorithm the server advertises; a hostile client need not.
            self._conn._server_sig_algs = set()
        return pair


def raw_login(
    port: int,
    login: str,
    key: Path,
    *,
    certificate: str | None,
    command: str,
    known_hosts: Path | None = None,
    algorithm: bytes | None = None,
    signature_algorithm: bytes | None = None,
) -> asyncssh.SSHCompletedProcess | Exception:
    """Log in with ``key`` (and ``certificate``, a line) and run ``command``; the result or why not.

    ``algorithm`` is the public key algorithm named in the request and
    ``signature_algorithm`` the one the client signs with; both default to
    what the key (or certificate) implies.
    """
    pair = asyncssh.load_keypairs([asyncssh.read_private_key(key)])[0]
    if certificate is not None:
        kind, blob = certificate.split()[:2]
        pair.algorithm, pair.public_data = kind.encode(), base64.b64decode(blob)
    if algorithm is not None:
        pair.algorithm = algorithm
    if signature_algorithm is not None:
        pair.sig_algorithm, pair.sig_algorithms = signature_algorithm, [signature_algorithm]
    else:
        pair.sig_algorithms = [pair.sig_algorithm]

    async def attempt() -> asyncssh.SSHCompletedProcess | Exception:
        try:
            conn, _ = await asyncssh.create_connection(
                lambda: _ForcedKeyClient(pair), "127.0.0.1", port, username=login,
                known_hosts=str(known_hosts) if known_hosts else None, client_keys=None,
                agent_path=None, preferred_auth="publickey", config=None,
                signature_algs=[pair.sig_algorithm.decode()], login_timeout=20,
            )  # fmt: skip
        except (asyncssh.Error, OSError, ValueError) as exc:
            return exc
        async with conn:
            try:
                return await conn.run(command, check=False, input="", timeout=20)
            except (asyncssh.Error, OSError, TimeoutError) as exc:
                return exc

    return asyncio.run(attempt())
