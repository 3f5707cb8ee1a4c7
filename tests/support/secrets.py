"""A TOTP secret box for tests that build a UserDirectory without a data directory."""

from __future__ import annotations

import functools
from collections.abc import Callable

from gateway.crypto.secret_box import SecretBox


def test_secret_box() -> Callable[[], SecretBox]:
    """A fresh random key, as the ``secret_box`` a UserDirectory takes."""
    box = SecretBox(SecretBox.new_key(), "the tests' key")
    return lambda: box


test_secret_box.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def data_dir_secret_box(totp_key_path: str) -> Callable[[], SecretBox]:
    """The key of a gateway's data directory, read on first use."""
    from pathlib import Path

    return functools.cache(lambda: SecretBox.load(Path(totp_key_path)))
