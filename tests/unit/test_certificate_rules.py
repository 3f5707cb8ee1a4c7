"""Certificate options, source-address lists and signature algorithms, read as sshd reads them.

Plain functions, hostile inputs. The same rules against a real sshd are in
tests/e2e/test_sshd_conformance.py; here are the edges a table shows best.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from dataclasses import replace
from pathlib import Path

import pytest
from asyncssh.packet import Boolean, Byte, MPInt, String, UInt32

from gateway.crypto.algorithms import (
    HUMAN_LANE_KEYS,
    MACHINE_LANE_KEYS,
    ca_signature_refusal,
    public_key_facts,
    user_auth_refusal,
)
from gateway.crypto.certificate_options import (
    CertificateOption,
    CertificateOptionError,
    parse_source_address,
    read_user_options,
)
from gateway.crypto.certificates import (
    CertificateMalformed,
    fingerprint_of_blob,
    parse_certificate_line,
)
from gateway.ssh.user_keys import ssh_layer_refusal
from tests.support.certificates import Crafted, crafted_certificate, string
from tests.support.machines import keypair


def option(name: str, data: bytes = b"") -> CertificateOption:
    return CertificateOption(name, data)


# -- options (auth-options.c cert_option_list) ------------------------------------------


def test_understood_options_are_read() -> None:
    read = read_user_options(
        [option("force-command", string("backup --now")),
         option("source-address", string("10.0.0.0/8,::1"))],
        [option("permit-pty"), option("odd@example.org", b"\0anything"),
         option("force-command", string("id"))],
    )  # fmt: skip
    assert read.force_command == "backup --now"
    assert read.source_networks == (
        ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))  # fmt: skip
    assert not read.verify_required
    assert read.extensions == {"permit-pty", "odd@example.org", "force-command"}
    assert read_user_options([], []).source_networks is None


@pytest.mark.parametrize(
    ("critical", "extensions", "reason"),
    [
        ([option("odd@example.org")], [], "unknown critical option 'odd@example.org'"),
        ([option("permit-pty")], [], "unknown critical option"),  # a flag in the wrong section
        (
            [
                option("source-address", string("10.0.0.0/8")),
                option("source-address", string("127.0.0.1")),
            ],
            [],
            "more than one source-address",
        ),
        (
            [option("force-command", string("a")), option("force-command", string("a"))],
            [],
            "more than one force-command",
        ),
        ([option("verify-required"), option("verify-required")], [], "more than one"),
        ([option("force-command", string("a") + b"x")], [], "corrupt (extra data)"),
        ([option("force-command", b"\0\0")], [], "malformed"),
        ([option("force-command", b"")], [], "malformed"),
        ([option("force-command", string(b"a\0b"))], [], "NUL"),
        ([option("force-command", string(b"\xff"))], [], "not valid UTF-8"),
        ([option("verify-required", b"x")], [], "corrupt (extra data)"),
        ([], [option("permit-pty", b"\0")], "permit-pty option is corrupt"),
        ([], [option("no-touch-required", string("x"))], "corrupt"),
    ],
)
def test_options_sshd_refuses_are_refused_with_the_reason(
    critical: list[CertificateOption], extensions: list[CertificateOption], reason: str
) -> None:
    with pytest.raises(CertificateOptionError, match=re.escape(reason)):
        read_user_options(critical, extensions)


# -- source-address (addrmatch.c addr_match_cidr_list, addr_pton_cidr) --------------------


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1",
        "10.0.0.0/8",
        "0.0.0.0/0",
        "::1",
        "fe80::/10",
        "::/0",
        "10.1.2.0/24,::1/128",
        "192.168.1.1/32",
        "10.0.0.0/008",
    ],
)
def test_source_address_lists_sshd_takes(text: str) -> None:
    assert len(parse_source_address(text)) == text.count(",") + 1


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty entry"),
        ("127.0.0.1,", "empty entry"),
        (",127.0.0.1", "empty entry"),
        ("127.0.0.1/8", "host bits"),
        ("10.0.0.0/33", "mask length"),
        ("::1/129", "mask length"),
        ("10.0.0.0/255.0.0.0", "mask length"),  # ipaddress would take a netmask; sshd does not
        ("10.0.0.0/", "mask length"),
        ("10.0.0.0/+8", "not an address"),
        ("10.0.0.0/ 8", "not an address"),
        ("fe80::1%lo", "not an address"),
        ("localhost", "not an address"),
        ("*", "not an address"),
        ("!10.0.0.0/8", "not an address"),
        ("127.1", "not an address"),  # getaddrinfo takes it; refusing is stricter, never looser
        ("1" * 50, "not an address"),
        ("１２７.0.0.1", "not an address"),  # full-width digits
        ("127.0.0.1\n", "not an address"),
    ],
)
def test_source_address_lists_sshd_refuses(text: str, reason: str) -> None:
    with pytest.raises(CertificateOptionError, match=reason):
        parse_source_address(text)


# -- algorithms (PubkeyAcceptedAlgorithms, CASignatureAlgorithms, RequiredRSASize) --------------


def test_the_lanes_accept_what_sshd_accepts() -> None:
    machine, human = MACHINE_LANE_KEYS.signature_algorithms, HUMAN_LANE_KEYS.signature_algorithms
    assert set(machine) == {"ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                            "ecdsa-sha2-nistp521", "rsa-sha2-512", "rsa-sha2-256"}  # fmt: skip
    assert set(human) == set(machine) | {"sk-ssh-ed25519@openssh.com",
                                         "sk-ecdsa-sha2-nistp256@openssh.com"}  # fmt: skip
    for key_type, bits in (("ssh-dss", None), ("ssh-ed448", None), ("ssh-rsa", 1023),
                           ("ssh-rsa", None), ("x509v3-ssh-rsa", None)):  # fmt: skip
        assert HUMAN_LANE_KEYS.key_refusal(key_type, bits), key_type
    assert HUMAN_LANE_KEYS.key_refusal("ssh-rsa", 1024) is None
    assert "security keys" in (MACHINE_LANE_KEYS.key_refusal("sk-ssh-ed25519@openssh.com", None)
                               or "")  # fmt: skip
    assert HUMAN_LANE_KEYS.key_refusal("sk-ssh-ed25519@openssh.com", None) is None


@pytest.mark.parametrize(
    ("requested", "blob_type", "signature", "reason"),
    [
        ("ssh-rsa", "ssh-rsa", "ssh-rsa", "ssh-rsa (SHA-1) is refused"),
        ("ssh-rsa-cert-v01@openssh.com", "ssh-rsa-cert-v01@openssh.com", "ssh-rsa", "SHA-1"),
        ("rsa-sha2-256", "ssh-rsa", "ssh-rsa", "made with ssh-rsa (SHA-1)"),
        ("rsa-sha2-256", "ssh-rsa", "rsa-sha2-512", "not the 'rsa-sha2-256'"),
        ("rsa-sha2-256-cert-v01@openssh.com", "ssh-rsa", "rsa-sha2-256", "does not match"),
        ("rsa-sha2-256", "ssh-rsa-cert-v01@openssh.com", "rsa-sha2-256", "does not match"),
        ("rsa-sha2-256", "ssh-ed25519", "ssh-ed25519", "does not match"),
        ("ssh-ed25519", "ssh-ed25519", "rsa-sha2-256", "made with"),
        ("ssh-dss", "ssh-dss", "ssh-dss", "ssh-dss (DSA, SHA-1)"),
        ("ssh-rsa-sha256@ssh.com", "ssh-rsa", "ssh-rsa-sha256@ssh.com", "is refused"),
        ("ssh-ed25519\0", "ssh-ed25519", "ssh-ed25519", "is refused"),
        ("ssh-ed25519", "ssh-ed25519", "webauthn-sk-ecdsa-sha2-nistp256@openssh.com", "made with"),
    ],
)
def test_signed_requests_sshd_refuses(
    requested: str, blob_type: str, signature: str, reason: str
) -> None:
    refused = HUMAN_LANE_KEYS.request_refusal(requested, blob_type, signature)
    assert refused is not None and reason in refused


def test_signed_requests_sshd_takes() -> None:
    for requested, blob, signature in (
        ("rsa-sha2-512", "ssh-rsa", "rsa-sha2-512"),
        ("rsa-sha2-256-cert-v01@openssh.com", "ssh-rsa-cert-v01@openssh.com", "rsa-sha2-256"),
        ("ssh-ed25519-cert-v01@openssh.com", "ssh-ed25519-cert-v01@openssh.com", "ssh-ed25519"),
        ("ecdsa-sha2-nistp384", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp384"),
        (
            "sk-ecdsa-sha2-nistp256@openssh.com",
            "sk-ecdsa-sha2-nistp256@openssh.com",
            "webauthn-sk-ecdsa-sha2-nistp256@openssh.com",
        ),
    ):
        assert HUMAN_LANE_KEYS.request_refusal(requested, blob, signature) is None


def test_ca_signature_algorithms() -> None:
    assert ca_signature_refusal("rsa-sha2-256") is None
    assert "SHA-1" in (ca_signature_refusal("ssh-rsa") or "")
    assert ca_signature_refusal("ssh-dss") and ca_signature_refusal("\x1b[2J")


def _request(algorithm: bytes) -> bytes:
    return (Byte(50) + String("svc") + String("ssh-connection") + String("publickey")
            + Boolean(True) + String(algorithm))  # fmt: skip


def test_user_auth_refusal_reads_the_wire() -> None:
    rsa = String("ssh-rsa") + MPInt(65537) + MPInt((1 << 2047) + 1)
    sha1 = String("ssh-rsa") + String(b"\0" * 256)
    assert user_auth_refusal(HUMAN_LANE_KEYS, rsa, b"", b"") is None  # a query: the key only
    assert "SHA-1" in (user_auth_refusal(HUMAN_LANE_KEYS, rsa, _request(b"ssh-rsa"), sha1) or "")
    assert user_auth_refusal(
        HUMAN_LANE_KEYS, rsa, _request(b"rsa-sha2-256"), String("rsa-sha2-256") + String(b"s")
    ) is None  # fmt: skip
    small = String("ssh-rsa") + MPInt(65537) + MPInt((1 << 767) + 1)
    assert "768 bits" in (user_auth_refusal(HUMAN_LANE_KEYS, small, b"", b"") or "")
    for hostile in (b"", b"\0\0\0\x07ssh-rsa", String(b"\xff\xfe"), UInt32(2**31)):
        assert user_auth_refusal(HUMAN_LANE_KEYS, hostile, b"", b"")
    for request in (b"", b"\x32", Byte(51) + _request(b"x")[1:], _request(b"\xff")):
        if request:
            assert user_auth_refusal(HUMAN_LANE_KEYS, rsa, request, b"") == (
                "malformed publickey request")  # fmt: skip
    facts = public_key_facts(small)
    assert facts is not None and (facts.key_type, facts.rsa_bits) == ("ssh-rsa", 768)


# -- certificates (sshkey.c cert_parse) ---------------------------------------------------------


@pytest.mark.openssh
def test_certificate_strings_are_c_strings(tmp_path: Path) -> None:
    ca, key = keypair(tmp_path, "ca"), keypair(tmp_path, "key")
    for spec, reason in (
        (Crafted(principals=["svc", "x\0y"]), "principal .* NUL"),
        (Crafted(principals=["svc"], key_id=b"a\0b"), "key id .* NUL"),
        (Crafted(principals=["svc"], key_id=b"\xff"), "key id .* not valid UTF-8"),
        (Crafted(principals=["svc"], extensions=[(b"odd\0x", b"")]), "name contains a NUL"),
        (Crafted(principals=["svc"], cert_type=3), "unknown certificate type 3"),
    ):
        with pytest.raises(CertificateMalformed, match=reason):
            parse_certificate_line(crafted_certificate(ca, key, spec))
    repeated = parse_certificate_line(crafted_certificate(ca, key, Crafted(
        principals=["svc"],
        critical=[("force-command", string("a")), ("force-command", string("b"))],
    )))  # fmt: skip
    assert [o.name for o in repeated.critical_options] == ["force-command", "force-command"]
    with pytest.raises(CertificateOptionError, match="more than one"):
        repeated.user_options()
    blob = String(b"\xff")
    assert fingerprint_of_blob(blob).startswith("SHA256:")  # unreadable: the blob's own


@pytest.mark.openssh
def test_what_asyncssh_refused_is_named_when_it_refuses_after_the_gate(tmp_path: Path) -> None:
    # The gate checks everything asyncssh does; if asyncssh still refuses (the certificate
    # expired in between, a dual-stack peer address), the trail says why, not "plain keys".
    ca, key = keypair(tmp_path, "ca"), keypair(tmp_path, "key")

    def blob(spec: Crafted) -> bytes:
        return base64.b64decode(crafted_certificate(ca, key, spec).split()[1])

    fine = Crafted(principals=["svc"], critical=[("source-address", string("127.0.0.0/8"))])
    for spec, principal, peer, reason in (
        (replace(fine, valid_after=-120, valid_before=-60), "svc", "127.0.0.1", "expired"),
        (fine, "other", "127.0.0.1", "principal mismatch"),
        (replace(fine, critical=[("odd@x", b"")]), "svc", "127.0.0.1", "Invalid OpenSSH"),
        (fine, "svc", "::ffff:127.0.0.1", "::ffff:7f00:1 is outside its source-address"),
        (fine, "svc", "127.0.0.1", "its CA key was not accepted"),
    ):
        assert reason in ssh_layer_refusal(blob(spec), principal, peer)
