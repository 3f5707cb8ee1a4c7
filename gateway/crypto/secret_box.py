"""Secrets at rest: TOTP secrets are stored sealed with AES-256-GCM, under a key kept apart
from the database.

The key is 32 random bytes, written as URL-safe base64 on one line: in
``DATA_DIR/keys/totp_secrets.key`` (mode 0600, made by ``pamgate init`` or
``pamgate db upgrade``), or given in ``$PAMGATE_TOTP_KEY`` (which wins). Every
node on one database needs the same key. A sealed value reads
``aesgcm1$<key id>$<base64 of nonce and ciphertext>``; the key id (8 hex
digits of the key's SHA-256) says which key sealed it, so a wrong key is
named as such instead of failing as "tampered". The user name is the
associated data: a sealed secret copied to another user's row does not open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.errors import PamgateError

KEY_ENV_VAR = "PAMGATE_TOTP_KEY"
SCHEME = "aesgcm1"
KEY_BYTES = 32
NONCE_BYTES = 12


class SecretBoxError(PamgateError):
    """A sealed secret cannot be opened, or the key cannot be had."""


class SecretKeyMissing(SecretBoxError):
    """Neither the key file nor the environment variable holds the key."""


class SecretBox:
    """Seals and opens short secrets with one AES-256-GCM key."""

    def __init__(self, key: bytes, origin: str = "a key") -> None:
        if len(key) != KEY_BYTES:
            raise SecretBoxError(f"{origin}: the key must be {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(key).hexdigest()[:8]
        #: Where the key came from, for messages.
        self.origin = origin

    @staticmethod
    def new_key() -> bytes:
        """A fresh random key."""
        return secrets.token_bytes(KEY_BYTES)

    @classmethod
    def load(cls, path: Path, environ: Mapping[str, str] = os.environ) -> SecretBox:
        """The key from ``$PAMGATE_TOTP_KEY``, else from ``path``; SecretKeyMissing if neither."""
        text = environ.get(KEY_ENV_VAR, "")
        origin = f"${KEY_ENV_VAR}"
        if not text:
            origin = str(path)
            try:
                text = path.read_text()
            except FileNotFoundError:
                raise SecretKeyMissing(
                    f"the TOTP secret key is missing: {path} does not exist and "
                    f"${KEY_ENV_VAR} is not set (copy the key from the node that made it, "
                    "or run 'pamgate db upgrade' on a database that has no sealed secrets yet)"
                ) from None
            except OSError as exc:
                raise SecretBoxError(f"cannot read the TOTP secret key {path}: {exc}") from None
        try:
            key = base64.urlsafe_b64decode(text.strip().encode())
        except (binascii.Error, ValueError):
            raise SecretBoxError(f"{origin}: the TOTP secret key is not base64") from None
        return cls(key, origin)

    @staticmethod
    def write_key_file(path: Path) -> bool:
        """Create a key file at ``path`` (0600) unless one exists; True if it was created."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as key_file:
            key_file.write(base64.urlsafe_b64encode(SecretBox.new_key()).decode() + "\n")
        return True

    @staticmethod
    def is_sealed(value: str) -> bool:
        """Whether ``value`` is a sealed secret (not one stored in clear)."""
        return value.startswith(SCHEME + "$")

    @staticmethod
    def key_id_of(value: str) -> str:
        """The id of the key that sealed ``value``."""
        return value.split("$")[1] if SecretBox.is_sealed(value) else ""

    def seal(self, secret: str, context: str) -> str:
        """``secret`` sealed for ``context`` (the user name)."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode(), context.encode())
        payload = base64.urlsafe_b64encode(nonce + sealed).decode()
        return f"{SCHEME}${self.key_id}${payload}"

    def open(self, value: str, context: str) -> str:
        """The secret in ``value``, sealed for ``context``; SecretBoxError if it cannot be."""
        if not self.is_sealed(value):
            raise SecretBoxError(
                f"the TOTP secret of {context!r} is stored in clear: run 'pamgate db upgrade'"
            )
        _, key_id, payload = value.split("$", 2)
        if key_id != self.key_id:
            raise SecretBoxError(
                f"the TOTP secret of {context!r} was sealed with key {key_id}, but the key "
                f"loaded from {self.origin} is {self.key_id}"
            )
        try:
            raw = base64.urlsafe_b64decode(payload.encode())
            opened = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode())
        except (binascii.Error, ValueError, InvalidTag):
            raise SecretBoxError(
                f"the TOTP secret of {context!r} does not open with key {self.key_id} "
                "(altered, or copied from another user)"
            ) from None
        return opened.decode()
