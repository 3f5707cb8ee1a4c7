"""OpenSSH public key lines: split, checked, fingerprinted."""

from __future__ import annotations

import base64
import binascii
import hashlib

from gateway.errors import IdentityError


def parse_public_key_line(line: str) -> tuple[str, str, str]:
    """Split an OpenSSH public key line into (key data, SHA256 fingerprint, comment).

    The key data is ``<type> <base64>``; raises IdentityError on a malformed line.
    """
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        raise IdentityError("not an OpenSSH public key line ('<type> <base64> [comment]')")
    key_type, blob = parts[0], parts[1]
    if "-cert-v01@openssh.com" in key_type:
        raise IdentityError("register a plain public key, not a certificate")
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise IdentityError("the public key's data is not valid base64") from None
    length = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else -1
    if raw[4 : 4 + length] != key_type.encode():
        raise IdentityError(f"the public key's data does not match its type {key_type!r}")
    digest = base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")
    return f"{key_type} {blob}", f"SHA256:{digest}", parts[2] if len(parts) > 2 else ""
