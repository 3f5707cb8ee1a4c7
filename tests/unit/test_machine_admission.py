"""The machine gate and credential life cycle without sockets, on an injected clock.

Certificates are real (signed by ssh-keygen); time is not, so expiry
boundaries, token lifetimes and renewals can be checked to the second.
"""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.crypto.certificates import (
    CertificateMalformed,
    PresentedCertificate,
    parse_certificate_line,
)
from gateway.crypto.machine_ca import MachineCA
from gateway.domain.alerts import WebhookAlerts
from gateway.domain.audit.trail import AuditLog, Trail
from gateway.domain.machines.admission import MachineAuthRefused, MachineGate, ScopeRefused
from gateway.domain.machines.credentials import JoinRefused, MachineCredentials, RenewalRefused
from gateway.domain.machines.registry import MachineError, MachineRegistry, ScopeTarget
from gateway.domain.machines.revocation import MachineRevocations
from gateway.errors import PamgateError
from gateway.store.database import Store
from gateway.store.models import MachineRevocation

pytestmark = pytest.mark.openssh

NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Lab:
    """A registry, CA, credentials and gate on one store and one clock."""

    def __init__(self, store: Store, folder: Path, ca_type: str = "ed25519") -> None:
        self.folder = folder
        self.clock = Clock()
        self.audit = AuditLog(store)
        self.ca_key = keygen(folder, "machine_ca", ca_type)
        self.registry = MachineRegistry(store, self.audit, clock=self.clock)
        self.ca = MachineCA(self.ca_key, clock=self.clock)
        self.credentials = MachineCredentials(
            store, self.audit, self.ca, WebhookAlerts([], self.audit), clock=self.clock
        )
        self.revocations = MachineRevocations(
            store, self.audit, self.registry, self.ca, clock=self.clock
        )
        self.gate = MachineGate(
            self.registry, self.credentials, self.revocations, self.ca, clock=self.clock
        )
        self.registry.add(
            "svc", actor="tests", kind="agent", owner="o", tech_owner="t", purpose="p",
            targets=[ScopeTarget("web01", "root"), ScopeTarget("web01", "backup")],
            commands=["echo ok", "re:ls( -l)?"], max_ttl_seconds=900,
        )  # fmt: skip

    def key(self, name: str = "k") -> Path:
        return keygen(self.folder, name, "ed25519")

    def keygen_cert(self, *args: str, key: Path | None = None, ca: Path | None = None) -> str:
        """A certificate from ssh-keygen; ``-V`` windows are relative to the real time."""
        key = key or self.key(f"k{len(list(self.folder.iterdir()))}")
        subprocess.run(
            ["ssh-keygen", "-q", "-s", str(ca or self.ca_key), "-I", "kid", *args,
             str(key.with_suffix(".pub"))],
            check=True, capture_output=True,
        )  # fmt: skip
        return key.with_name(key.name + "-cert.pub").read_text()

    def check(self, certificate: str, login: str = "svc", source: str = "127.0.0.1"):  # noqa: ANN201
        return self.gate.check(login, parse_certificate_line(certificate), source=source)


def keygen(folder: Path, name: str, kind: str) -> Path:
    path = folder / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True, capture_output=True
    )
    return path


@pytest.fixture()
def lab(store: Store, tmp_path: Path) -> Lab:
    return Lab(store, tmp_path)


def real_window(lab: Lab, before: int, after: int) -> tuple[str, ...]:
    """A -V window around the lab clock's "now" (absolute, so the real time does not matter)."""
    start, end = int(lab.clock.now) + before, int(lab.clock.now) + after
    return ("-V", f"{_utc(start)}:{_utc(end)}")


def _utc(epoch: int) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(epoch)) + "Z"


def test_validity_boundaries_to_the_second(lab: Lab) -> None:
    cert = lab.keygen_cert("-n", "svc", *real_window(lab, 0, 600))
    parsed = parse_certificate_line(cert)
    lab.clock.now = parsed.valid_after - 1
    with pytest.raises(MachineAuthRefused, match="not valid yet"):
        lab.check(cert)
    lab.clock.now = parsed.valid_after
    assert lab.check(cert).nhi.name == "svc"
    lab.clock.now = parsed.valid_before - 1
    assert lab.check(cert).nhi.name == "svc"
    lab.clock.now = parsed.valid_before
    with pytest.raises(MachineAuthRefused, match="expired"):
        lab.check(cert)


def test_lifetime_ceiling_allows_the_backdating(lab: Lab) -> None:
    assert lab.check(lab.keygen_cert("-n", "svc", *real_window(lab, -60, 900)))
    with pytest.raises(MachineAuthRefused, match="exceeds"):
        lab.check(lab.keygen_cert("-n", "svc", *real_window(lab, -60, 901)))
    with pytest.raises(MachineAuthRefused, match="exceeds"):
        lab.check(lab.keygen_cert("-n", "svc"))  # "forever"


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("-h", "-n", "svc"), "host certificate"),
        ((), "no principals"),
        (("-n", "other"), "do not include 'svc'"),
        (("-n", "svc", "-O", "critical:odd@x=1"), "unknown critical option"),
        (("-n", "svc", "-O", "verify-required"), "verify-required"),
        (("-n", "svc", "-O", "source-address=10.0.0.0/8"), "outside the certificate"),
    ],
)
def test_refusals_name_the_rule(lab: Lab, args: tuple[str, ...], reason: str) -> None:
    with pytest.raises(MachineAuthRefused, match=reason):
        lab.check(lab.keygen_cert(*args, *real_window(lab, -60, 300)))


def test_wrong_ca_and_sha1_signatures(store: Store, tmp_path: Path) -> None:
    lab = Lab(store, tmp_path, ca_type="rsa")
    window = real_window(lab, -60, 300)
    with pytest.raises(MachineAuthRefused, match="SHA-1"):
        lab.check(lab.keygen_cert("-t", "ssh-rsa", "-n", "svc", *window))
    assert lab.check(lab.keygen_cert("-t", "rsa-sha2-256", "-n", "svc", *window))
    rogue = keygen(tmp_path, "rogue", "ed25519")
    with pytest.raises(MachineAuthRefused, match="not signed by the machine CA"):
        lab.check(lab.keygen_cert("-n", "svc", *window, ca=rogue))


def test_malformed_certificates_are_clear_errors(lab: Lab) -> None:
    good = lab.keygen_cert("-n", "svc", *real_window(lab, -60, 300)).split()
    for bad in ("", "garbage", f"{good[0]} !!!", f"{good[0]} {good[1][:40]}",
                f"{good[0]} {good[1][:-8]}AAAAAAAA"):  # fmt: skip
        with pytest.raises(CertificateMalformed):
            parse_certificate_line(bad)
    with pytest.raises(CertificateMalformed, match="not an OpenSSH certificate"):
        parse_certificate_line(lab.key().with_suffix(".pub").read_text())


def test_scope_destination_and_commands(lab: Lab) -> None:
    login = lab.check(lab.keygen_cert("-n", "svc", *real_window(lab, -60, 300)))
    config_path = lab.folder / "pamgate.toml"
    config_path.write_text(TARGETS)
    config = load_config(config_path)
    with pytest.raises(ScopeRefused, match="name a target"):
        MachineGate.destination(login, "svc", config)  # two accounts in scope
    with pytest.raises(ScopeRefused, match="not in svc's scope"):
        MachineGate.destination(login, "svc:db01", config)
    target, account = MachineGate.destination(login, "svc:backup@web01", config)
    assert (target.name, account) == ("web01", "backup")
    assert MachineGate.command(login, "ls -l", pty=False) == "ls -l"
    for command in ("ls -la", "echo ok; id", "ls -l\nid", None):
        with pytest.raises(ScopeRefused):
            MachineGate.command(login, command, pty=False)
    with pytest.raises(ScopeRefused, match="pty"):
        MachineGate.command(login, "echo ok", pty=True)


TARGETS = """
[[targets]]
name = "web01"
host = "127.0.0.1"
accounts = ["root", "backup"]
host_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFmTjzR9GHjvjKJTd3OAMN9YLhGXgOG7r3DujrQ3pqVP"]

[[targets]]
name = "db01"
host = "127.0.0.1"
accounts = ["root"]
host_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFmTjzR9GHjvjKJTd3OAMN9YLhGXgOG7r3DujrQ3pqVP"]
"""


# -- join tokens -------------------------------------------------------------------


def test_join_token_expiry_uses_and_hostile_tokens(lab: Lab) -> None:
    key = lab.key().with_suffix(".pub").read_text()
    token = lab.credentials.create_join_token("svc", ttl_seconds=600, uses=2, actor="tests")
    lab.clock.now += 599
    nhi, signed = lab.credentials.join(token, key, ttl_seconds=None, source="10.0.0.1")
    assert nhi.name == "svc" and signed.ttl_seconds == 300  # the default, under the 15m max
    lab.clock.now += 1
    with pytest.raises(JoinRefused, match="expired"):
        lab.credentials.join(token, key, ttl_seconds=None, source="10.0.0.1")
    for hostile in ("", "pgjoin", "pgjoin--x", "pgjoin-99999999999999-x", token[:-1] + "?",
                    "pgjoin-1-" + "A" * 10_000, "pgjoin-1-\x00\x1b[2J"):  # fmt: skip
        with pytest.raises(JoinRefused, match="not valid"):
            lab.credentials.join(hostile, key, ttl_seconds=None, source="10.0.0.1")
    refused = [e for e in lab.audit.events(Trail.MACHINE) if e.action == "machine.join_refused"]
    assert len(refused) == 8


def test_tokens_and_certificates_only_for_active_identities(lab: Lab) -> None:
    token = lab.credentials.create_join_token("svc", ttl_seconds=600, uses=1, actor="tests")
    lab.registry.set_status("svc", "suspended", actor="tests")
    with pytest.raises(JoinRefused, match="suspended"):
        lab.credentials.join(token, lab.key().with_suffix(".pub").read_text(), ttl_seconds=None,
                             source="10.0.0.1")  # fmt: skip
    with pytest.raises(MachineError, match="suspended"):
        lab.credentials.create_join_token("svc", ttl_seconds=600, uses=1, actor="tests")
    with pytest.raises(MachineError):
        lab.credentials.create_join_token("svc", ttl_seconds=600, uses=0, actor="tests")


# -- renewal and generations ----------------------------------------------------------


def test_renewal_chain_and_copied_credential(lab: Lab) -> None:
    first_key, second_key = lab.key("a"), lab.key("b")
    signed = lab.credentials.issue("svc", first_key.with_suffix(".pub").read_text(), 600,
                                   actor="tests")  # fmt: skip
    first = parse_certificate_line(signed.certificate)
    assert lab.check(signed.certificate).lineage.generation == 1
    renewed = lab.credentials.renew("svc", first, second_key.with_suffix(".pub").read_text(),
                                    ttl_seconds=None, source="10.0.0.1")  # fmt: skip
    assert renewed.ttl_seconds == 600  # the presented certificate's lifetime
    second = parse_certificate_line(renewed.certificate)
    assert lab.check(renewed.certificate).lineage.generation == 2
    with pytest.raises(RenewalRefused, match="newest"):
        lab.credentials.renew("svc", first, lab.key("c").with_suffix(".pub").read_text(),
                              ttl_seconds=None, source="10.0.0.1")  # fmt: skip
    # The gate flags the replaced certificate; nothing is locked until the
    # presenter proves it holds the key (the lane calls lock_copied_credential).
    stale = lab.check(signed.certificate)
    assert stale.lineage is not None and stale.lineage.superseded
    assert lab.gate.new_session_refused_because(stale) is not None
    assert lab.registry.get("svc").status == "active"
    reason = lab.credentials.lock_copied_credential("svc", first, stale.lineage, source="10.0.0.9")
    assert "copied" in reason
    assert lab.registry.get("svc").status == "suspended"
    with pytest.raises(MachineAuthRefused, match="suspended"):
        lab.gate.check("svc", second, source="127.0.0.1")


def test_certificates_signed_elsewhere_cannot_renew(lab: Lab) -> None:
    foreign: PresentedCertificate = parse_certificate_line(
        lab.keygen_cert("-n", "svc", "-z", "4242", *real_window(lab, -60, 300))
    )
    with pytest.raises(RenewalRefused, match="not issued by pamgate"):
        lab.credentials.renew("svc", foreign, lab.key("n").with_suffix(".pub").read_text(),
                              ttl_seconds=None, source="10.0.0.1")  # fmt: skip


# -- revocation -------------------------------------------------------------------------


def test_revoke_validates_and_counts_outstanding(lab: Lab) -> None:
    for bad in ({}, {"serial": -1}, {"key_id": " "}, {"serial": 1, "key_id": "x"},
                {"key_line": "not a key"}, {"name": "nobody"}):  # fmt: skip
        with pytest.raises(PamgateError):
            lab.revocations.revoke(actor="tests", **bad)  # type: ignore[arg-type]
    assert lab.revocations.revocations() == []
    key = lab.key("r").with_suffix(".pub").read_text()
    for _ in range(3):
        lab.credentials.issue("svc", key, 300, actor="tests")
    assert len(lab.revocations.outstanding("svc")) == 3
    lab.clock.now += 301
    assert lab.revocations.outstanding("svc") == []
    lab.credentials.issue("svc", key, 300, actor="tests")
    assert len(lab.revocations.revoke(actor="tests", name="svc")) == 1
    assert lab.revocations.revoke(actor="tests", name="svc") == []
    assert lab.revocations.outstanding() == []


# -- issue 18: the CA key, serials, key ids and the KRL ----------------------------------


def krl_says(krl: Path, certificate: str, folder: Path) -> str:
    """What ``ssh-keygen -Q`` says of a certificate line against a KRL (the oracle)."""
    path = folder / "checked-cert.pub"
    path.write_text(certificate)
    result = subprocess.run(["ssh-keygen", "-Q", "-f", str(krl), str(path)],
                            capture_output=True, text=True)  # fmt: skip
    return result.stdout


def test_revoking_the_ca_key_revokes_every_certificate_it_signed(lab: Lab) -> None:
    cert = lab.keygen_cert("-n", "svc", "-z", "77", *real_window(lab, -60, 300))
    assert lab.check(cert)
    lab.revocations.revoke(actor="tests", key_line=lab.ca_key.with_suffix(".pub").read_text())
    with pytest.raises(MachineAuthRefused, match="its CA key SHA256:.* is revoked"):
        lab.check(cert)
    krl = lab.folder / "revoked.krl"
    assert lab.revocations.write_krl(krl).entries == 1
    assert "REVOKED" in krl_says(krl, cert, lab.folder)


def test_serials_are_64_bit_and_never_zero(lab: Lab) -> None:
    for serial, message in ((0, "serial 0 cannot be revoked by serial"), (-1, "1 to "),
                            (2**64, "1 to 18446744073709551615")):  # fmt: skip
        with pytest.raises(MachineError, match=message):
            lab.revocations.revoke(actor="tests", serial=serial)
    assert lab.revocations.revocations() == []
    for serial in (2**31, 2**63 - 1, 2**63, 2**64 - 1):
        cert = lab.keygen_cert("-n", "svc", "-z", str(serial), *real_window(lab, -60, 300))
        assert lab.check(cert).lineage is None  # looked up, not crashed on
        lab.revocations.revoke(actor="tests", serial=serial)
        with pytest.raises(MachineAuthRefused, match=f"revoked \\(serial {serial}\\)"):
            lab.check(cert)
        krl = lab.folder / "revoked.krl"
        lab.revocations.write_krl(krl)
        assert "REVOKED" in krl_says(krl, cert, lab.folder)


def test_key_ids_a_krl_cannot_hold_are_refused(lab: Lab) -> None:
    for key_id in ("job#5", " job", "job ", "job\n5", "job\t", "", "a\0b"):
        with pytest.raises(MachineError, match="--key-id"):
            lab.revocations.revoke(actor="tests", key_id=key_id)
    assert lab.revocations.revoke(actor="tests", key_id="nightly job 5 ünïcode")
    cert = lab.keygen_cert("-n", "svc", *real_window(lab, -60, 300))  # key id "kid"
    lab.revocations.revoke(actor="tests", key_id="kid")
    krl = lab.folder / "revoked.krl"
    assert lab.revocations.write_krl(krl).entries == 2
    assert "REVOKED" in krl_says(krl, cert, lab.folder)


def test_old_revocations_no_krl_can_hold_are_left_out_not_fatal(lab: Lab, store: Store) -> None:
    # Rows written before serial 0 and odd key ids were refused: once, `machine krl` failed
    # on them for good ("revoke serial failed").
    with store.transaction() as db:
        for kind, value in (("serial", "0"), ("key_id", "job#5"), ("serial", "12")):
            db.add(MachineRevocation(kind=kind, value=value, reason="", revoked_by="old",
                                     revoked_at=datetime.now(UTC)))  # fmt: skip
    krl = lab.folder / "revoked.krl"
    written = lab.revocations.write_krl(krl)
    assert written.entries == 1
    assert [(entry.value, "cannot" in why or "'#'" in why) for entry, why in written.left_out] == [
        ("0", True), ("job#5", True)]  # fmt: skip
    zero = lab.keygen_cert("-n", "svc", *real_window(lab, -60, 300))  # serial 0
    with pytest.raises(MachineAuthRefused, match="serial 0"):
        lab.check(zero)  # the gateway still refuses what it was told to (fail closed)


def test_the_backdating_allowance_is_for_the_start_only(lab: Lab) -> None:
    with pytest.raises(MachineAuthRefused, match="960 s from now, which exceeds"):
        lab.check(lab.keygen_cert("-n", "svc", *real_window(lab, 0, 960)))
    assert lab.check(lab.keygen_cert("-n", "svc", *real_window(lab, -30, 900)))


def test_an_nhi_with_sftp_gets_no_forced_command(lab: Lab) -> None:
    for name, sftp in (("one", False), ("one-sftp", True)):
        lab.registry.add(
            name, actor="tests", kind="agent", owner="o", tech_owner="t", purpose="p",
            targets=[ScopeTarget("web01", "root")], commands=["uptime"], allow_sftp=sftp,
        )  # fmt: skip
    assert lab.registry.get("one").certificate_scope().force_command == "uptime"
    assert lab.registry.get("one-sftp").certificate_scope().force_command is None
