"""PROXY protocol headers, v1 and v2, as the specification and HAProxy write them."""

from __future__ import annotations

import struct

import pytest

from gateway.ssh.proxy_protocol import ProxyHeader, ProxyHeaderError, parse_proxy_header
from tests.support.proxy_client import V2_SIGNATURE, header


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("client", ["203.0.113.7", "2001:db8::7"])
def test_headers_name_the_client_and_their_length(version: str, client: str) -> None:
    sent = header(version, client, 50000, ("127.0.0.1", 2222) if ":" not in client
                  else ("::1", 2222))  # fmt: skip
    ssh = b"SSH-2.0-OpenSSH_9.2\r\n"
    parsed = parse_proxy_header(sent + ssh)
    assert parsed == ProxyHeader((client, 50000), len(sent))
    for cut in range(1, len(sent)):  # a header split over several reads waits for the rest
        assert parse_proxy_header(sent[:cut]) is None, cut


def test_local_and_unknown_headers_name_nobody() -> None:
    local = V2_SIGNATURE + struct.pack("!BBH", 0x20, 0x00, 0)
    assert parse_proxy_header(local) == ProxyHeader(None, 16)
    assert parse_proxy_header(b"PROXY UNKNOWN\r\n") == ProxyHeader(None, 15)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n", "does not start with a PROXY"),
        (b"PROXY TCP4 not-an-address\r\n", "malformed PROXY v1"),
        (b"PROXY TCP4 2001:db8::1 127.0.0.1 1 2\r\n", "malformed PROXY v1 address"),
        (b"PROXY TCP4 1.2.3.4 127.0.0.1 99999 2\r\n", "malformed PROXY v1 address"),
        (b"PROXY TCP4 1.2.3.4 127.0.0.1 1\r\n", "malformed PROXY v1"),
        (b"PROXY " + b"x" * 120, "longer than 107"),
        (V2_SIGNATURE + struct.pack("!BBH", 0x31, 0x11, 12) + bytes(12), "version 3"),
        (V2_SIGNATURE + struct.pack("!BBH", 0x22, 0x11, 12) + bytes(12), "command 2"),
        (V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x31, 216) + bytes(216), "family/protocol"),
        (V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, 4096), "4096 bytes"),
        ("PROXY TCP4 ١٢٣.1.1.1 127.0.0.1 1 2\r\n".encode(), "malformed PROXY v1 address"),
    ],
)
def test_malformed_headers_are_refused(data: bytes, problem: str) -> None:
    with pytest.raises(ProxyHeaderError, match=problem):
        parse_proxy_header(data)
