"""The client side towards targets: one SSH connection per relayed session.

The gateway logs in with exactly one credential (the session's minted
certificate, or for a legacy target its static key) and checks the target's
host key against the pinned keys from the config. It never reads
``~/.ssh/config``, ``known_hosts`` or an agent.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncssh

from gateway.config import TargetSettings
from gateway.crypto.upstream_ca import UpstreamCredential, load_private_key
from gateway.errors import HostKeyMismatch, UpstreamAuthFailed, UpstreamUnreachable
from gateway.ssh.packet_io import UpstreamTCP

logger = logging.getLogger("pamgate.upstream")


#: Ciphers offered to targets, AES-GCM first: the relay decrypts every byte a
#: target sends, and asyncssh's AES-GCM (one AEAD call per packet, AES-NI) costs
#: a fifth of its ChaCha20-Poly1305 (two cipher set-ups per packet). Both are
#: AEAD ciphers OpenSSH prefers; nothing weaker is offered than by default.
UPSTREAM_CIPHERS = sorted(
    asyncssh.encryption.get_default_encryption_algs(),
    key=lambda name: not name.endswith(b"-gcm@openssh.com"),
)


def pinned_host_keys(target: TargetSettings) -> list[asyncssh.SSHKey]:
    """The target's pinned host keys as key objects."""
    return [asyncssh.import_public_key(line) for line in target.host_keys]


async def connect_upstream(
    target: TargetSettings,
    account: str,
    credential: UpstreamCredential | None,
    *,
    legacy_key_path: Path | None = None,
    timeout: float = 10.0,
) -> asyncssh.SSHClientConnection:
    """Open an SSH connection to ``target`` as ``account``.

    Uses ``credential`` (certificate mode) or the key at ``legacy_key_path``
    (key mode). Raises HostKeyMismatch, UpstreamAuthFailed or
    UpstreamUnreachable with a message fit for the user's terminal.
    """
    if credential is not None:
        client_keys: list[object] = [(credential.private_key, credential.certificate)]
    elif legacy_key_path is not None:
        client_keys = [load_private_key(legacy_key_path, f"legacy key for target {target.name}")]
    else:  # pragma: no cover - the caller always passes one
        raise ValueError("no upstream credential")
    try:
        return await asyncio.wait_for(
            asyncssh.connect(
                target.host,
                target.port,
                username=account,
                known_hosts=(pinned_host_keys(target), [], []),
                client_keys=client_keys,
                config=None,
                agent_path=None,
                agent_forwarding=False,
                password=None,
                kbdint_auth=False,
                gss_host=None,
                preferred_auth="publickey",
                encryption_algs=[name.decode() for name in UPSTREAM_CIPHERS],
                connect_timeout=timeout,
                encoding=None,
                tunnel=UpstreamTCP(),
            ),
            timeout=timeout + 1,
        )
    except asyncssh.HostKeyNotVerifiable:
        raise HostKeyMismatch(
            f"host key of target {target.name!r} does not match the pinned key; "
            "refusing to connect (possible man-in-the-middle, or the target was rebuilt)"
        ) from None
    except asyncssh.PermissionDenied:
        raise UpstreamAuthFailed(
            f"target {target.name!r} refused the gateway's credential for account {account!r} "
            "(does it trust the upstream CA in TrustedUserCAKeys?)"
        ) from None
    except (TimeoutError, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise UpstreamUnreachable(
            f"cannot reach target {target.name!r} at {target.host}:{target.port}: {reason}"
        ) from None
    except asyncssh.Error as exc:
        raise UpstreamUnreachable(
            f"SSH connection to target {target.name!r} failed: {exc.reason}"
        ) from None
