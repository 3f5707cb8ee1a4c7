"""Reading OpenSSH certificates as presented by a client, field by field.

:func:`parse_certificate` turns a certificate blob into
:class:`PresentedCertificate`: every field the machine lane's checks need,
including the *names* of critical options (so an unknown one can be
refused by name) and the CA's signature algorithm (so SHA-1 ``ssh-rsa``
signatures can be refused as OpenSSH does). The CA signature is verified.
Anything malformed raises :class:`CertificateMalformed` with a short reason.

The layout is OpenSSH's PROTOCOL.certkeys; the key-specific fields are read
with asyncssh's own decoders (asyncssh is pinned, see pyproject.toml).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from dataclasses import dataclass
from typing import cast

from asyncssh.packet import PacketDecodeError, SSHPacket
from asyncssh.public_key import (
    KeyImportError,
    SSHKey,
    SSHOpenSSHCertificate,
    _certificate_alg_map,
    decode_ssh_public_key,
)

from gateway.errors import PamgateError

CERT_TYPE_USER = 1
CERT_TYPE_HOST = 2
#: More principals than this is hostile (OpenSSH itself allows 256).
MAX_PRINCIPALS = 256
#: Critical options the machine lane enforces; any other makes a certificate unusable.
KNOWN_CRITICAL_OPTIONS = frozenset({"force-command", "source-address"})
#: CA signature algorithms OpenSSH no longer accepts by default (SHA-1).
WEAK_SIGNATURE_ALGORITHMS = frozenset({"ssh-rsa"})


class CertificateMalformed(PamgateError):
    """The bytes are not a well-formed, correctly signed OpenSSH certificate."""


@dataclass(frozen=True)
class PresentedCertificate:
    """The fields of one OpenSSH certificate."""

    #: ``user`` or ``host``.
    cert_type: str
    #: The certified key, ``TYPE BASE64``, and its SHA256 fingerprint.
    key: str
    key_fingerprint: str
    #: The CA's public key, ``TYPE BASE64``.
    signing_key: str
    signature_algorithm: str
    serial: int
    key_id: str
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int
    #: Critical options by name (values as text; source-address as given).
    critical_options: dict[str, str]
    extensions: frozenset[str]

    @property
    def lifetime_seconds(self) -> int:
        return self.valid_before - self.valid_after

    @property
    def force_command(self) -> str | None:
        return self.critical_options.get("force-command")

    @property
    def source_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        text = self.critical_options.get("source-address", "")
        return [ipaddress.ip_network(part, strict=False) for part in text.split(",") if part]


def is_certificate(blob: bytes) -> bool:
    """True if ``blob`` starts with an OpenSSH certificate algorithm name."""
    try:
        return SSHPacket(blob).get_string() in _certificate_alg_map
    except PacketDecodeError:
        return False


def parse_certificate_line(line: str) -> PresentedCertificate:
    """Parse one ``TYPE BASE64 [COMMENT]`` certificate line (a ``-cert.pub`` file)."""
    parts = line.strip().split()
    if len(parts) < 2:
        raise CertificateMalformed("not an OpenSSH certificate line ('TYPE BASE64 [COMMENT]')")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise CertificateMalformed("the certificate is not valid base64") from None
    return parse_certificate(blob)


def parse_certificate(blob: bytes) -> PresentedCertificate:
    """Parse and signature-check a certificate blob; raise CertificateMalformed if bad."""
    try:
        return _parse(blob)
    except (PacketDecodeError, KeyImportError, ValueError, UnicodeDecodeError) as exc:
        raise CertificateMalformed(f"malformed certificate ({exc or type(exc).__name__})") from None


def _parse(blob: bytes) -> PresentedCertificate:
    packet = SSHPacket(blob)
    algorithm = packet.get_string()
    key_handler, cert_handler = _certificate_alg_map.get(algorithm, (None, None))
    if key_handler is None or cert_handler is None:
        raise CertificateMalformed("not an OpenSSH certificate (unknown certificate type)")
    # asyncssh types the map's values as the SSHCertificate base, but only OpenSSH
    # certificate classes are ever registered in it (see register_certificate_alg).
    openssh_handler = cast("type[SSHOpenSSHCertificate]", cert_handler)
    (key_params, serial, cert_type, key_id, principals_blob, valid_after, valid_before,
     options_blob, extensions_blob) = openssh_handler._decode(packet, key_handler)  # fmt: skip
    signing_key_blob = packet.get_string()
    signed = packet.get_consumed_payload()
    signature = packet.get_string()
    packet.check_end()
    signing_key = decode_ssh_public_key(signing_key_blob)
    if not signing_key.verify(signed, signature):
        raise CertificateMalformed("the certificate's CA signature does not verify")
    if cert_type not in (CERT_TYPE_USER, CERT_TYPE_HOST):
        raise CertificateMalformed(f"unknown certificate type {cert_type}")
    principals = _strings(principals_blob, MAX_PRINCIPALS + 1)
    key = key_handler.make_public(key_params)
    return PresentedCertificate(
        cert_type="user" if cert_type == CERT_TYPE_USER else "host",
        key=openssh_key_data(key),
        key_fingerprint=key.get_fingerprint("sha256"),
        signing_key=openssh_key_data(signing_key),
        signature_algorithm=SSHPacket(signature).get_string().decode("ascii", "replace"),
        serial=serial,
        key_id=key_id.decode("utf-8"),
        principals=tuple(principals),
        valid_after=valid_after,
        valid_before=valid_before,
        critical_options=_options(options_blob),
        extensions=frozenset(_options(extensions_blob)),
    )


def _strings(blob: bytes, limit: int) -> list[str]:
    packet = SSHPacket(blob)
    values: list[str] = []
    while packet:
        if len(values) >= limit:
            break
        values.append(packet.get_string().decode("utf-8"))
    return values


def _options(blob: bytes) -> dict[str, str]:
    """Option names and their values: a string, a name list (as commas), or empty."""
    packet, options = SSHPacket(blob), {}
    while packet:
        name = packet.get_string().decode("utf-8")
        data = SSHPacket(packet.get_string())
        if not data:
            options[name] = ""
        elif name == "source-address":
            options[name] = data.get_string().decode("ascii")
        else:
            options[name] = data.get_string().decode("utf-8", "replace")
    return options


def openssh_key_data(key: SSHKey) -> str:
    """A key as ``TYPE BASE64``, the form pamgate stores and compares keys in."""
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


def key_data_of_blob(blob: bytes) -> str:
    """A public key blob from the SSH protocol as ``TYPE BASE64``."""
    try:
        return openssh_key_data(decode_ssh_public_key(blob))
    except (KeyImportError, PacketDecodeError, ValueError):
        raise CertificateMalformed("not a public key") from None
