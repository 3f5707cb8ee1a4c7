"""The PROXY protocol (v1 and v2, as HAProxy's ``send-proxy`` / ``send-proxy-v2`` send it).

Behind a TCP load balancer every connection comes from the balancer's
address. A balancer that speaks the PROXY protocol starts each connection
with a header naming the real client; :class:`ProxyProtocolReceiver` reads
it, from the addresses the lane's ``proxy_protocol_from`` trusts only, and
hands the SSH connection a transport whose ``peername`` is the real client.
Everything that reads the peer address (policy source rules, throttling,
connection limits, certificate ``source-address``, the audit trail) then
sees the client, not the balancer.

From a trusted address the header is required: a connection without one,
or with a malformed one, is closed. From any other address a header is
refused: otherwise anyone could claim any source. Both refusals are
reported to ``on_refused`` (the lane audits them).

Written by hand from the specification (haproxy.org, "The PROXY protocol",
versions 1 and 2): the two formats are small and fixed, and the parsing
must happen inside asyncio's protocol callbacks, which the packages on
PyPI do not offer.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

logger = logging.getLogger("pamgate.proxy_protocol")

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
#: A v1 header is at most 107 bytes, CRLF included (the specification's limit).
V1_MAX = 107
#: v2: 16 fixed bytes, then at most this much address data (we accept no more).
V2_MAX_PAYLOAD = 512
#: A trusted balancer sends its header at once; a silent one is dropped after this.
HEADER_TIMEOUT_SECONDS = 10.0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ProxyHeaderError(ValueError):
    """A PROXY header that is malformed, unsupported or not allowed."""


@dataclass(frozen=True)
class ProxyHeader:
    """What a header said: the real client (None for ``LOCAL``/``UNKNOWN``), and its length."""

    source: tuple[str, int] | None
    length: int


def parse_proxy_header(data: bytes) -> ProxyHeader | None:
    """Parse a header at the start of ``data``; None if more bytes are needed.

    ProxyHeaderError if ``data`` does not start with a valid v1 or v2 header.
    """
    if data.startswith(V2_SIGNATURE[: len(data)]) and len(data) < 16:
        return None
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data)
    if V1_PREFIX.startswith(data[:6]) and len(data) < 6:
        return None
    if data.startswith(V1_PREFIX):
        return _parse_v1(data)
    raise ProxyHeaderError("the connection does not start with a PROXY protocol header")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError("PROXY v1 header longer than 107 bytes")
        return None
    fields = data[:end].decode("ascii", "replace").split(" ")
    if fields[1:2] == ["UNKNOWN"]:
        return ProxyHeader(None, end + 2)
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"malformed PROXY v1 header: {data[:end]!r}")
    _, family, source, _destination, source_port, _destination_port = fields
    try:
        address = ipaddress.ip_address(source)
        port = int(source_port)
    except ValueError:
        raise ProxyHeaderError(f"malformed PROXY v1 address: {data[:end]!r}") from None
    if (address.version == 4) != (family == "TCP4") or not 0 <= port <= 65535:
        raise ProxyHeaderError(f"malformed PROXY v1 address: {data[:end]!r}")
    return ProxyHeader((str(address), port), end + 2)


def _parse_v2(data: bytes) -> ProxyHeader | None:
    version_command, family_protocol, length = struct.unpack_from("!BBH", data, 12)
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"unsupported PROXY protocol version {version_command >> 4}")
    if length > V2_MAX_PAYLOAD:
        raise ProxyHeaderError(f"PROXY v2 header of {length} bytes")
    if len(data) < 16 + length:
        return None
    total = 16 + length
    command = version_command & 0x0F
    if command == 0x0:  # LOCAL: the balancer's own health check
        return ProxyHeader(None, total)
    if command != 0x1:
        raise ProxyHeaderError(f"unsupported PROXY v2 command {command}")
    payload = data[16:total]
    if family_protocol == 0x11 and length >= 12:  # TCP over IPv4
        source = ipaddress.IPv4Address(payload[0:4])
        (port,) = struct.unpack_from("!H", payload, 8)
    elif family_protocol == 0x21 and length >= 36:  # TCP over IPv6
        source = ipaddress.IPv6Address(payload[0:16])  # type: ignore[assignment]
        (port,) = struct.unpack_from("!H", payload, 32)
    elif family_protocol == 0x00:  # UNSPEC
        return ProxyHeader(None, total)
    else:
        raise ProxyHeaderError(f"unsupported PROXY v2 address family/protocol {family_protocol}")
    return ProxyHeader((str(source), port), total)


def looks_like_proxy_header(data: bytes) -> bool:
    """Whether ``data`` starts like a PROXY header (to refuse one from an untrusted address)."""
    return data.startswith(V1_PREFIX) or data.startswith(V2_SIGNATURE)


def trusts(networks: Sequence[Network], address: str) -> bool:
    """Whether ``address`` is one of the trusted balancers."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


class _ClientAddressedTransport:
    """The balancer's transport, reporting the real client as its peer."""

    def __init__(self, transport: asyncio.Transport, peername: tuple[str, int]) -> None:
        self._transport = transport
        self._peername = peername

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peername
        if name == "proxy_peername":  # the balancer itself
            return self._transport.get_extra_info("peername", default)
        return self._transport.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class ProxyProtocolReceiver(asyncio.Protocol):
    """Wraps one accepted connection's protocol: reads a PROXY header from trusted balancers.

    ``on_refused(peer, reason)`` is called (once) for a connection closed
    because of its header.
    """

    def __init__(
        self,
        inner: asyncio.Protocol,
        trusted: Sequence[Network],
        on_refused: Callable[[str, str], None],
    ) -> None:
        self._inner = inner
        self._trusted = trusted
        self._on_refused = on_refused
        self._transport: asyncio.Transport | None = None
        self._peer = ""
        #: Bytes held while a trusted balancer's header is incomplete; None once it is read.
        self._pending: bytearray | None = None
        #: Whether the first bytes from an untrusted peer have been looked at.
        self._checked_untrusted = False
        self._timer: asyncio.TimerHandle | None = None
        self._inner_started = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if peer else ""
        if trusts(self._trusted, self._peer):
            # Nothing reaches SSH (not even our version line) before the header is read.
            self._pending = bytearray()
            self._timer = asyncio.get_running_loop().call_later(
                HEADER_TIMEOUT_SECONDS, self._refuse, "no PROXY header from a trusted balancer"
            )
        else:
            self._start_inner(transport)

    def data_received(self, data: bytes) -> None:
        if self._pending is not None:
            self._pending += data
            try:
                header = parse_proxy_header(bytes(self._pending))
            except ProxyHeaderError as exc:
                self._refuse(str(exc))
                return
            if header is None:
                return
            rest = bytes(self._pending[header.length :])
            self._pending = None
            if self._timer is not None:
                self._timer.cancel()
            assert self._transport is not None
            # LOCAL/UNKNOWN (a health check): the balancer speaks for itself.
            peername = header.source or self._transport.get_extra_info("peername")
            addressed = _ClientAddressedTransport(self._transport, peername)
            self._start_inner(cast(asyncio.BaseTransport, addressed))
            if rest:
                self._inner.data_received(rest)
            return
        if not self._checked_untrusted:
            self._checked_untrusted = True
            if looks_like_proxy_header(data):
                self._refuse("a PROXY header from an address not in proxy_protocol_from")
                return
        self._inner.data_received(data)

    def _refuse(self, reason: str) -> None:
        logger.warning("connection from %s refused: %s", self._peer, reason)
        if self._transport is not None:
            self._transport.close()
        self._pending = None
        self._on_refused(self._peer, reason)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner_started else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._inner_started:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner_started:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner_started:
            self._inner.resume_writing()

    def _start_inner(self, transport: asyncio.BaseTransport) -> None:
        self._inner_started = True
        self._inner.connection_made(transport)
