"""The certificate checks both lanes make, at least as strictly as OpenSSH's sshd.

The machine lane (NHI certificates from the machine CA,
:mod:`gateway.domain.machines.admission`) and the human lane (login
certificates from the login CA, :mod:`gateway.domain.login_certificates`) hold
a presented certificate to the same rules, in this order, and name the first
one it breaks:

1. a *user* certificate, signed by the lane's CA (and no other);
2. a CA signature algorithm sshd accepts (no SHA-1 ``ssh-rsa``) and a key
   type the lane accepts (no DSA, no RSA under 1024 bits);
3. options as sshd reads them (:mod:`gateway.crypto.certificate_options`: no
   unknown or repeated critical option, no corrupt value), and no
   ``verify-required`` (pamgate issues none);
4. ``valid_after <= now < valid_before``, with no further skew at the end;
5. at least one principal (asyncssh would accept none for any user; OpenSSH
   does not), no more than :data:`MAX_PRINCIPALS`, one of which is exactly
   the name logging in.

:func:`check_source_address` is the ``source-address`` rule; each lane calls
it where its own rules put it. What each lane adds (an NHI's registration and
scope, a login certificate's record and revocation) is the lane's.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from gateway.crypto.algorithms import UserKeyRules, ca_signature_refusal
from gateway.crypto.certificate_options import CertificateOptionError, UserOptions
from gateway.crypto.certificates import MAX_PRINCIPALS, PresentedCertificate
from gateway.errors import PamgateError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class CertificateRefused(PamgateError):
    """A certificate may not log in; the message is the reason, for the audit trail."""


@dataclass(frozen=True)
class TrustedCA:
    """One lane's CA, as its checks need it."""

    #: The CA's public key, ``TYPE BASE64``.
    key_data: str
    #: How refusals name it: ``machine CA``, ``login CA``.
    name: str
    #: The keys (and so certified keys) the lane accepts.
    key_rules: UserKeyRules


def check_user_certificate(
    cert: PresentedCertificate, ca: TrustedCA, *, principal: str, now: float
) -> UserOptions:
    """Rules 1-5 of the module docstring for ``principal`` at ``now``: the certificate's
    options, understood; CertificateRefused (naming the rule) if it breaks one."""
    if cert.cert_type != "user":
        raise CertificateRefused("a host certificate cannot log in")
    if cert.signing_key != ca.key_data:
        raise CertificateRefused(f"the certificate is not signed by the {ca.name}")
    refused = ca_signature_refusal(cert.signature_algorithm)
    refused = refused or ca.key_rules.key_refusal(cert.key_type, cert.key_bits)
    if refused:
        raise CertificateRefused(refused)
    try:
        options = cert.user_options()
    except CertificateOptionError as exc:
        raise CertificateRefused(str(exc)) from None
    if options.verify_required:
        raise CertificateRefused(
            "the certificate requires security-key user verification (verify-required), "
            "which pamgate never issues"
        )
    if now < cert.valid_after:
        raise CertificateRefused("the certificate is not valid yet")
    if now >= cert.valid_before:
        raise CertificateRefused("the certificate has expired")
    if not cert.principals:
        raise CertificateRefused("the certificate has no principals")
    if len(cert.principals) > MAX_PRINCIPALS:
        raise CertificateRefused("the certificate has too many principals")
    if principal not in cert.principals:
        raise CertificateRefused(f"the certificate's principals do not include {principal!r}")
    return options


def check_source_address(options: UserOptions, source: str) -> None:
    """CertificateRefused unless ``source`` lies inside the certificate's ``source-address``
    (when it has one)."""
    networks = options.source_networks
    if networks is None:
        return
    address = client_address(source)
    if address is None or not any(address in network for network in networks):
        raise CertificateRefused(f"source {source} is outside the certificate's networks")


def client_address(source: str) -> IPAddress | None:
    """The client's address as sshd matches it, or None if ``source`` is not one."""
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return None
    # A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; sshd matches them as IPv4.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
