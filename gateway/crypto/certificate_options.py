"""What a user certificate's critical options and extensions mean, read as sshd reads them.

OpenSSH's ``auth-options.c`` (``cert_option_list``) and ``addrmatch.c``
(``addr_match_cidr_list``) are the reference. :func:`read_user_options`
refuses, with the reason, every certificate sshd would refuse for its
options:

- a critical option sshd does not understand (it knows ``force-command``,
  ``source-address`` and ``verify-required``); unknown extensions are
  ignored, whatever they carry;
- a repeated ``force-command`` or ``source-address`` ("multiple ...
  options"); pamgate refuses any repeated critical option;
- an understood option with bytes after its value, or a flag option
  (``permit-pty``, ``verify-required``...) with any value ("corrupt
  (extra data)");
- a value with a NUL byte; a ``source-address`` list sshd cannot parse
  (empty entries, odd characters, a host part under the mask).

Stricter than sshd, because asyncssh (which checks the certificate again
when the client signs) cannot carry it: a ``force-command`` that is not
UTF-8. ``verify-required`` is read here; the machine gate refuses it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.errors import PamgateError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

FORCE_COMMAND = "force-command"
SOURCE_ADDRESS = "source-address"
VERIFY_REQUIRED = "verify-required"
#: Critical options sshd 9.2 understands.
CRITICAL_OPTIONS = frozenset({FORCE_COMMAND, SOURCE_ADDRESS, VERIFY_REQUIRED})
#: Extensions sshd 9.2 understands: flags, which must carry no data.
FLAG_EXTENSIONS = frozenset({
    "no-touch-required", "permit-X11-forwarding", "permit-agent-forwarding",
    "permit-port-forwarding", "permit-pty", "permit-user-rc",
})  # fmt: skip
#: addrmatch.c: INET6_ADDRSTRLEN + 3 characters at most, and only these.
_MAX_CIDR_ENTRY = 46 + 3
_CIDR_CHARACTERS = frozenset("0123456789abcdefABCDEF.:/")


class CertificateOptionError(PamgateError):
    """The certificate's options make it unusable; the message says which and why."""


@dataclass(frozen=True)
class CertificateOption:
    """One critical option or extension as the certificate carries it."""

    #: The name (not UTF-8 bytes are shown as escapes: such a name is never understood).
    name: str
    #: The option's data field, undecoded.
    data: bytes


@dataclass(frozen=True)
class UserOptions:
    """A user certificate's options, understood and checked."""

    force_command: str | None
    #: The ``source-address`` networks; None if the certificate has no such option.
    source_networks: tuple[Network, ...] | None
    verify_required: bool
    #: Names of all extensions (known or not).
    extensions: frozenset[str]


def read_user_options(
    critical: Sequence[CertificateOption], extensions: Sequence[CertificateOption]
) -> UserOptions:
    """Understand a user certificate's options, or CertificateOptionError saying why not."""
    seen: set[str] = set()
    force_command: str | None = None
    networks: tuple[Network, ...] | None = None
    verify_required = False
    for option in critical:
        if option.name not in CRITICAL_OPTIONS:
            raise CertificateOptionError(f"unknown critical option {option.name[:80]!r}")
        if option.name in seen:
            raise CertificateOptionError(f"the certificate has more than one {option.name} option")
        seen.add(option.name)
        if option.name == VERIFY_REQUIRED:
            _no_data(option)
            verify_required = True
            continue
        value = _single_string(option)
        if option.name == FORCE_COMMAND:
            try:
                force_command = value.decode("utf-8")
            except UnicodeDecodeError:
                raise CertificateOptionError("the force-command is not valid UTF-8") from None
        else:
            networks = parse_source_address(value.decode("ascii", "replace"))
    for option in extensions:
        if option.name in FLAG_EXTENSIONS:
            _no_data(option)
    return UserOptions(force_command, networks, verify_required,
                       frozenset(option.name for option in extensions))  # fmt: skip


def parse_source_address(text: str) -> tuple[Network, ...]:
    """A ``source-address`` list as sshd parses it (addr_match_cidr_list, addr_pton_cidr).

    Each comma-separated entry is an address or ``ADDRESS/BITS`` with no
    host bits set under the mask. Python's ``ipaddress`` takes fewer address
    spellings than getaddrinfo (no ``127.1``, no octal), so the odd ones sshd
    takes are refused: stricter, never looser.
    """
    networks = []
    for entry in text.split(","):
        shown = f"source-address entry {entry[:60]!r}"
        if not entry:
            raise CertificateOptionError("the source-address list has an empty entry")
        if len(entry) > _MAX_CIDR_ENTRY or not set(entry) <= _CIDR_CHARACTERS:
            raise CertificateOptionError(f"{shown} is not an address or network")
        address, slash, bits = entry.partition("/")
        if slash and not bits.isdigit():
            raise CertificateOptionError(f"{shown} has an invalid mask length")
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            raise CertificateOptionError(f"{shown} is not an address or network") from None
        length = int(bits) if slash else parsed.max_prefixlen
        if length > parsed.max_prefixlen:
            raise CertificateOptionError(f"{shown} has an invalid mask length")
        try:
            networks.append(ipaddress.ip_network((parsed, length), strict=True))
        except ValueError:
            raise CertificateOptionError(f"{shown} has host bits set under its mask") from None
    return tuple(networks)


def _single_string(option: CertificateOption) -> bytes:
    """The one string an option's data holds (sshbuf_get_cstring, then no extra data)."""
    data = option.data
    length = int.from_bytes(data[:4], "big") if len(data) >= 4 else -1
    if length < 0 or len(data) < 4 + length:
        raise CertificateOptionError(f"the {option.name} option is malformed")
    if len(data) != 4 + length:
        raise CertificateOptionError(f"the {option.name} option is corrupt (extra data)")
    value = data[4:]
    if b"\0" in value:
        raise CertificateOptionError(f"the {option.name} option contains a NUL byte")
    return value


def _no_data(option: CertificateOption) -> None:
    if option.data:
        raise CertificateOptionError(f"the {option.name} option is corrupt (extra data)")
