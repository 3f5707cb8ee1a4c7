"""TOTP secrets at rest: sealed with AES-256-GCM under a key kept apart from the database."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from gateway.crypto.secret_box import KEY_ENV_VAR, SecretBox, SecretBoxError, SecretKeyMissing


def test_seal_and_open_bind_the_secret_to_its_user() -> None:
    box = SecretBox(SecretBox.new_key())
    sealed = box.seal("JBSWY3DPEHPK3PXP", "alice")
    assert sealed.startswith(f"aesgcm1${box.key_id}$") and "JBSWY3DP" not in sealed
    assert box.open(sealed, "alice") == "JBSWY3DPEHPK3PXP"
    assert box.seal("JBSWY3DPEHPK3PXP", "alice") != sealed  # a fresh nonce each time
    with pytest.raises(SecretBoxError, match="copied from another user"):
        box.open(sealed, "mallory")
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(SecretBoxError, match="altered"):
        box.open(tampered, "alice")


def test_a_wrong_key_and_a_secret_in_clear_are_named_as_such() -> None:
    sealed = SecretBox(SecretBox.new_key()).seal("S", "alice")
    other = SecretBox(SecretBox.new_key(), "keys/totp_secrets.key")
    with pytest.raises(SecretBoxError, match=r"sealed with key \w{8}, but the key loaded from "
                                             r"keys/totp_secrets.key is"):  # fmt: skip
        other.open(sealed, "alice")
    with pytest.raises(SecretBoxError, match="stored in clear: run 'pamgate db upgrade'"):
        other.open("JBSWY3DPEHPK3PXP", "alice")


def test_key_file_is_private_never_overwritten_and_the_environment_wins(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "totp_secrets.key"
    with pytest.raises(SecretKeyMissing, match="totp_secrets.key does not exist"):
        SecretBox.load(path, environ={})
    assert SecretBox.write_key_file(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    first = path.read_text()
    assert not SecretBox.write_key_file(path) and path.read_text() == first
    from_file = SecretBox.load(path, environ={})
    key = SecretBox.new_key()
    from_env = SecretBox.load(path, environ={KEY_ENV_VAR: base64.urlsafe_b64encode(key).decode()})
    assert from_env.key_id != from_file.key_id and from_env.origin == f"${KEY_ENV_VAR}"
    with pytest.raises(SecretBoxError, match="must be 32 bytes"):
        SecretBox.load(path, environ={KEY_ENV_VAR: "c2hvcnQ="})
