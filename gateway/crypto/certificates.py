"""Reading OpenSSH certificates as presented by a client, field by field.

:func:`parse_certificate` turns a certificate blob into
:class:`PresentedCertificate`: every field the machine lane's checks need,
including every critical option and extension in order, repeats included
(what they mean is :mod:`gateway.crypto.certificate_options`'s), the
certified key's type and RSA size, and the CA's key and signature algorithm
(so SHA-1 ``ssh-rsa`` signatures can be refused as OpenSSH does). The CA
signature is verified. Anything malformed raises :class:`CertificateMalformed`
with a short reason; as in OpenSSH's ``cert_parse``, that includes a NUL byte
in the key id, a principal or an option name. A key id or principal that is
not UTF-8 is refused too (sshd takes it; asyncssh cannot).

The layout is OpenSSH's PROTOCOL.certkeys; the key-specific fields are read
with asyncssh's own decoders (asyncssh is pinned, see pyproject.toml).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
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

from gateway.crypto.algorithms import public_key_facts
from gateway.crypto.certificate_options import (
    CertificateOption,
    UserOptions,
    read_user_options,
)
from gateway.errors import PamgateError

CERT_TYPE_USER = 1
CERT_TYPE_HOST = 2
#: More principals than this is hostile (OpenSSH itself allows 256).
MAX_PRINCIPALS = 256


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
    #: The certified key's type (``ssh-ed25519``, ``ssh-rsa``...) and, for RSA, its size.
    key_type: str
    key_bits: int | None
    #: The CA's public key, ``TYPE BASE64``, and its SHA256 fingerprint.
    signing_key: str
    signing_key_fingerprint: str
    signature_algorithm: str
    serial: int
    key_id: str
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int
    #: Critical options and extensions, in order, repeats included.
    critical_options: tuple[CertificateOption, ...]
    extension_options: tuple[CertificateOption, ...]

    @property
    def lifetime_seconds(self) -> int:
        return self.valid_before - self.valid_after

    def user_options(self) -> UserOptions:
        """The options understood and checked (CertificateOptionError if sshd would refuse)."""
        return read_user_options(self.critical_options, self.extension_options)


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
    facts = public_key_facts(key.public_data)
    if facts is None:
        raise CertificateMalformed("the certified key cannot be read")
    return PresentedCertificate(
        cert_type="user" if cert_type == CERT_TYPE_USER else "host",
        key=openssh_key_data(key),
        key_fingerprint=key.get_fingerprint("sha256"),
        key_type=facts.key_type,
        key_bits=facts.rsa_bits,
        signing_key=openssh_key_data(signing_key),
        signing_key_fingerprint=signing_key.get_fingerprint("sha256"),
        signature_algorithm=SSHPacket(signature).get_string().decode("ascii", "replace"),
        serial=serial,
        key_id=_text(key_id, "key id"),
        principals=tuple(principals),
        valid_after=valid_after,
        valid_before=valid_before,
        critical_options=_options(options_blob),
        extension_options=_options(extensions_blob),
    )


def _text(value: bytes, what: str) -> str:
    """A C string of the certificate (no NUL, as OpenSSH's sshbuf_get_cstring), as UTF-8."""
    if b"\0" in value:
        raise CertificateMalformed(f"a {what} of the certificate contains a NUL byte")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise CertificateMalformed(f"a {what} of the certificate is not valid UTF-8") from None


def _strings(blob: bytes, limit: int) -> list[str]:
    packet = SSHPacket(blob)
    values: list[str] = []
    while packet:
        if len(values) >= limit:
            break
        values.append(_text(packet.get_string(), "principal"))
    return values


def _options(blob: bytes) -> tuple[CertificateOption, ...]:
    """Every option of a section in order: its name and its undecoded data."""
    packet, options = SSHPacket(blob), []
    while packet:
        name = packet.get_string()
        if b"\0" in name:
            raise CertificateMalformed("a certificate option's name contains a NUL byte")
        options.append(CertificateOption(name.decode("utf-8", "backslashreplace"),
                                         packet.get_string()))  # fmt: skip
    return tuple(options)


def openssh_key_data(key: SSHKey) -> str:
    """A key as ``TYPE BASE64``, the form pamgate stores and compares keys in."""
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


def fingerprint_of_blob(blob: bytes) -> str:
    """The SHA256 fingerprint ``ssh-keygen -l`` shows for a key or certificate blob.

    For a certificate, that of the certified key; for one that does not even
    parse, that of the blob itself.
    """
    if is_certificate(blob):
        try:
            return parse_certificate(blob).key_fingerprint
        except CertificateMalformed:
            pass
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def key_data_of_blob(blob: bytes) -> str:
    """A public key blob from the SSH protocol as ``TYPE BASE64``."""
    try:
        return openssh_key_data(decode_ssh_public_key(blob))
    except (KeyImportError, PacketDecodeError, ValueError):
        raise CertificateMalformed("not a public key") from None
