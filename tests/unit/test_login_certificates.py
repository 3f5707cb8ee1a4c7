"""Login certificates without sockets: issued by the real ssh-keygen, judged on an injected
clock, revoked in the same transaction as the change that revokes them (issue 23).

The checks shared with the machine lane (gateway.domain.certificate_checks) are exercised
here through the login CA: a SHA-1 CA signature needs an RSA CA, which the gateway never
makes, so this is where it can be shown.
"""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.config import AuthSettings
from gateway.crypto.certificates import PresentedCertificate, parse_certificate_line
from gateway.crypto.login_ca import LoginCA
from gateway.domain.audit.trail import ActorType, AuditLog, Trail
from gateway.domain.certificate_checks import CertificateRefused
from gateway.domain.identities import UserDirectory
from gateway.domain.login_certificates import LoginCertificateError, LoginCertificates
from gateway.store.database import Store
from tests.support.certificates import Crafted, crafted_certificate, keygen_sign, string
from tests.support.clock import Clock
from tests.support.secrets import test_secret_box

pytestmark = pytest.mark.openssh

MFA_AT = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


def keygen(folder: Path, name: str, kind: str = "ed25519") -> Path:
    path = folder / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True, capture_output=True
    )
    return path


class Lab:
    """A login CA, its service and a user directory on one store and one clock."""

    def __init__(self, store: Store, folder: Path, ca_type: str = "ed25519", **auth: object):
        self.folder = folder
        self.clock = Clock(time.time())
        self.audit = AuditLog(store)
        self.ca_key = keygen(folder, "login_ca", ca_type)
        self.settings = AuthSettings(**auth)  # type: ignore[arg-type]
        self.service = LoginCertificates(
            store, self.audit, LoginCA(self.ca_key, clock=self.clock), self.settings,
            clock=self.clock,
        )  # fmt: skip
        self.users = UserDirectory(store, self.audit, secret_box=test_secret_box())
        self.users.add_user("alice", actor="tests", password="alice-secret-pw")

    def key(self, kind: str = "ed25519") -> Path:
        return keygen(self.folder, f"k{len(list(self.folder.iterdir()))}", kind)

    def issue(self, key: Path, **kw: object) -> PresentedCertificate:
        options: dict[str, object] = {
            "ttl_seconds": None, "source": "192.0.2.7", "bind_source": False,
            "mfa_at": MFA_AT, "method": "password+totp", **kw,
        }  # fmt: skip
        signed = self.service.issue("alice", key.with_suffix(".pub").read_text(), **options)  # type: ignore[arg-type]
        return parse_certificate_line(signed.certificate)

    def crafted(self, key: Path, spec: Crafted) -> PresentedCertificate:
        return parse_certificate_line(crafted_certificate(self.ca_key, key, spec))

    def refused(self, cert: PresentedCertificate, *, user: str = "alice",
                source: str = "192.0.2.7") -> str:  # fmt: skip
        with pytest.raises(CertificateRefused) as caught:
            self.service.check(user, cert, source=source)
        return str(caught.value)


@pytest.fixture()
def lab(store: Store, tmp_path: Path) -> Lab:
    return Lab(store, tmp_path)


def test_issued_certificate_is_what_the_records_and_the_trail_say(lab: Lab) -> None:
    key = lab.key()
    cert = lab.issue(key)
    assert cert.principals == ("alice",)
    assert cert.key_id == f"pamgate-login user=alice serial={cert.serial}"
    assert cert.valid_before - cert.valid_after == 8 * 3600 + 60  # 60 s backdated
    assert {o.name for o in cert.critical_options} == set()
    assert [o.name for o in cert.extension_options] == ["permit-port-forwarding", "permit-pty"]
    login = lab.service.check("alice", cert, source="192.0.2.7")
    assert login.serial == cert.serial and login.mfa_at == MFA_AT
    issued = [r for r in lab.audit.events(Trail.HUMAN) if r.action == "login_cert.issued"]
    assert len(issued) == 1 and issued[0].authority == "sign-in:password+totp"
    assert [c.serial for c in lab.service.outstanding("alice")] == [cert.serial]


def test_validity_is_exact_at_both_ends(lab: Lab) -> None:
    cert = lab.issue(lab.key(), ttl_seconds=600)
    lab.clock.now = cert.valid_before - 1
    lab.service.check("alice", cert, source="192.0.2.7")
    lab.clock.now = cert.valid_before  # no skew at the end
    assert lab.refused(cert) == "the certificate has expired"
    lab.clock.now = cert.valid_after - 1
    assert lab.refused(cert) == "the certificate is not valid yet"


def test_source_binding(lab: Lab) -> None:
    cert = lab.issue(lab.key(), bind_source=True)
    assert [o.name for o in cert.critical_options] == ["source-address"]
    lab.service.check("alice", cert, source="192.0.2.7")
    assert lab.refused(cert, source="192.0.2.8") == (
        "source 192.0.2.8 is outside the certificate's networks"
    )
    assert lab.refused(cert, source="not-an-address").startswith("source not-an-address")


def test_every_certificate_bound_when_the_config_says_so(store: Store, tmp_path: Path) -> None:
    lab = Lab(store, tmp_path, login_certificate_bind_source=True)
    cert = lab.issue(lab.key())
    assert lab.refused(cert, source="192.0.2.99").startswith("source 192.0.2.99 is outside")


def test_other_principal_other_key_and_unrecorded_serials_are_refused(lab: Lab) -> None:
    key = lab.key()
    cert = lab.issue(key)
    assert lab.refused(cert, user="bob") == "the certificate's principals do not include 'bob'"
    # The login CA key itself, in the wrong hands: serials must be the gateway's, for that key.
    other = lab.key()
    reused = lab.crafted(other, Crafted(principals=["alice"], serial=cert.serial))
    assert lab.refused(reused) == (
        f"login certificate serial {cert.serial} was issued for another key"
    )
    forged = lab.crafted(key, Crafted(principals=["alice"], serial=4242))
    assert lab.refused(forged) == "the login CA never issued serial 4242 to alice"


def test_another_ca_and_a_host_certificate_are_refused(lab: Lab) -> None:
    key = lab.key()
    other_ca = keygen(lab.folder, "other_ca")
    cert = parse_certificate_line(keygen_sign(other_ca, key, "-n", "alice").read_text())
    assert lab.refused(cert) == "the certificate is not signed by the login CA"
    host = lab.crafted(key, Crafted(principals=["alice"], cert_type=2))
    assert lab.refused(host) == "a host certificate cannot log in"


@pytest.mark.parametrize(
    ("critical", "reason"),
    [
        ([("no-such-option", b"")], "unknown critical option"),
        ([("source-address", string("10.0.0.0/8")), ("source-address", string("10.0.0.0/8"))],
         "more than one source-address"),
        ([("verify-required", b"")], "verify-required"),
    ],
)  # fmt: skip
def test_options_sshd_would_refuse_are_refused(
    lab: Lab, critical: list[tuple[str, bytes]], reason: str
) -> None:
    cert = lab.crafted(lab.key(), Crafted(principals=["alice"], critical=critical))
    assert reason in lab.refused(cert)


def test_sha1_ca_signature_and_dsa_keys_are_refused(store: Store, tmp_path: Path) -> None:
    lab = Lab(store, tmp_path, ca_type="rsa")
    sha1 = lab.crafted(lab.key(), Crafted(principals=["alice"], signature_algorithm=b"ssh-rsa"))
    assert lab.refused(sha1) == "the CA signature uses ssh-rsa (SHA-1), which is refused"
    dsa = lab.crafted(lab.key("dsa"), Crafted(principals=["alice"]))
    assert lab.refused(dsa) == "ssh-dss (DSA, SHA-1) keys are not accepted"
    with pytest.raises(LoginCertificateError, match="DSA"):
        lab.issue(lab.key("dsa"))


def test_lifetime_beyond_the_maximum_is_refused(lab: Lab) -> None:
    long = lab.crafted(lab.key(), Crafted(principals=["alice"], valid_before=25 * 3600))
    assert "longer than the login certificates' maximum of 86400 s" in lab.refused(long)
    with pytest.raises(LoginCertificateError, match="between 1 min and 1440 min"):
        lab.issue(lab.key(), ttl_seconds=25 * 3600)
    with pytest.raises(LoginCertificateError, match="between 1 min"):
        lab.issue(lab.key(), ttl_seconds=10)
    with pytest.raises(LoginCertificateError, match="not a public key"):
        lab.service.issue("alice", "garbage", ttl_seconds=None, source="192.0.2.7",
                          bind_source=False, mfa_at=MFA_AT, method="password+totp")  # fmt: skip


@pytest.mark.parametrize("how", ["disable", "reset-mfa", "passwd", "logout"])
def test_revocation_with_the_change_that_causes_it(lab: Lab, how: str) -> None:
    first, second = lab.issue(lab.key()), lab.issue(lab.key())
    if how == "disable":
        lab.users.set_disabled("alice", True, actor="tests")
        reason = "user disabled"
    elif how == "reset-mfa":
        lab.users.reset_mfa("alice", actor="tests")
        reason = "MFA reset"
    elif how == "passwd":
        # An admin sets a new password when the old one may be known: the certificates
        # signed on the strength of the old one go with it.
        lab.users.set_password("alice", "a brand new passphrase", actor="tests")
        reason = "password changed"
    else:
        revoked = lab.service.log_out(
            "alice", actor="alice", actor_type=ActorType.HUMAN, authority="self-service",
            source="192.0.2.7",
        )  # fmt: skip
        assert revoked == [first.serial, second.serial]
        reason = "logout"
    for cert in (first, second):
        assert lab.refused(cert) == f"login certificate serial {cert.serial} was revoked ({reason})"
    assert lab.service.revoked_among([first.serial, second.serial, 999]) == {
        first.serial: reason, second.serial: reason
    }
    assert lab.service.outstanding("alice") == []
    events = [r for r in lab.audit.events(Trail.HUMAN) if r.action == "login_cert.revoked"]
    assert len(events) == 1 and events[0].reason == reason
    # A certificate issued afterwards works (revocation is of what was outstanding).
    lab.users.set_disabled("alice", False, actor="tests")
    lab.service.check("alice", lab.issue(lab.key()), source="192.0.2.7")


def test_nothing_to_revoke_writes_no_event_except_for_logout(lab: Lab) -> None:
    lab.users.set_disabled("alice", True, actor="tests")
    assert not [r for r in lab.audit.events(Trail.HUMAN) if r.action == "login_cert.revoked"]
    assert lab.service.log_out("alice", actor="alice", actor_type=ActorType.HUMAN,
                               authority="self-service", source=None) == []  # fmt: skip
    assert [r.action for r in lab.audit.events(Trail.HUMAN)][-1] == "login_cert.revoked"
