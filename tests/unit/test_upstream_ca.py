"""Per-session upstream certificates, inspected with the real ssh-keygen."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.crypto.upstream_ca import UpstreamCA, ensure_key_file
from gateway.store.database import Store
from tests.support.clock import Clock

pytestmark = pytest.mark.openssh


@pytest.fixture()
def ca(store: Store, tmp_path: Path) -> tuple[UpstreamCA, Clock]:
    key_path = tmp_path / "keys" / "upstream_ca"
    assert ensure_key_file(key_path, "test CA")
    clock = Clock(1_800_000_000.0)
    authority = UpstreamCA.from_file(
        key_path, store, ttl_seconds=120, backdate_seconds=60, clock=clock
    )
    return authority, clock


def inspect(certificate: object, tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}-cert.pub"
    path.write_bytes(certificate.export_certificate())  # type: ignore[attr-defined]
    return subprocess.run(
        ["ssh-keygen", "-L", "-f", str(path)], capture_output=True, text=True, check=True
    ).stdout


def test_certificate_is_short_lived_and_narrow(
    ca: tuple[UpstreamCA, Clock], tmp_path: Path
) -> None:
    authority, clock = ca
    credential = authority.mint_upstream_certificate(
        user="alice", account="deploy", session_id="s1"
    )
    listing = inspect(credential.certificate, tmp_path, "one")
    assert "Type: ssh-ed25519-cert-v01@openssh.com user certificate" in listing
    assert re.search(r"Principals:\s*\n\s+deploy\n\s+Critical", listing)
    assert 'Key ID: "pamgate user=alice session=s1 account=deploy"' in listing
    valid = re.search(r"Valid: from (\S+) to (\S+)", listing)
    start = datetime.fromisoformat(valid.group(1)).replace(tzinfo=UTC)
    end = datetime.fromisoformat(valid.group(2)).replace(tzinfo=UTC)
    now = datetime.fromtimestamp(clock.now, UTC)
    assert (now - start).total_seconds() == 60
    assert (end - now).total_seconds() == 120
    assert "permit-pty" in listing
    assert "permit-agent-forwarding" not in listing
    assert "permit-port-forwarding" not in listing


def test_serials_are_unique(ca: tuple[UpstreamCA, Clock], tmp_path: Path) -> None:
    authority, _ = ca
    serials = [
        authority.mint_upstream_certificate(user="alice", account="root", session_id=f"s{i}").serial
        for i in range(5)
    ]
    assert len(set(serials)) == 5
    listing = inspect(
        authority.mint_upstream_certificate(user="bob", account="root", session_id="x").certificate,
        tmp_path,
        "last",
    )
    assert f"Serial: {max(serials) + 1}" in listing


def test_each_session_gets_a_new_key(ca: tuple[UpstreamCA, Clock]) -> None:
    authority, _ = ca
    first = authority.mint_upstream_certificate(user="a", account="root", session_id="1")
    second = authority.mint_upstream_certificate(user="a", account="root", session_id="2")
    assert first.private_key.public_data != second.private_key.public_data


def test_key_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "k"
    assert ensure_key_file(path, "one")
    before = path.read_bytes()
    assert not ensure_key_file(path, "two")
    assert path.read_bytes() == before
    assert oct(path.stat().st_mode & 0o777) == "0o600"
