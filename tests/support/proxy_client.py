"""A load balancer in miniature, for ``ssh -o ProxyCommand``: connect to the gateway, send a
PROXY protocol header claiming a client address, then relay stdin/stdout.

    python -m tests.support.proxy_client HOST PORT CLIENT_ADDRESS {v1,v2,none,garbage}
"""

from __future__ import annotations

import ipaddress
import os
import selectors
import socket
import struct
import sys

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def header(version: str, client: str, client_port: int, server: tuple[str, int]) -> bytes:
    """The header a balancer sends first (``none``: nothing; ``garbage``: a broken one)."""
    address = ipaddress.ip_address(client)
    if version == "v1":
        family = "TCP4" if address.version == 4 else "TCP6"
        return f"PROXY {family} {client} {server[0]} {client_port} {server[1]}\r\n".encode()
    if version == "v2":
        destination = ipaddress.ip_address(server[0])
        if address.version == 4:
            payload = address.packed + destination.packed + struct.pack("!HH", client_port,
                                                                         server[1])  # fmt: skip
            return V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, len(payload)) + payload
        payload = address.packed + ipaddress.IPv6Address("::1").packed + struct.pack(
            "!HH", client_port, server[1]
        )
        return V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x21, len(payload)) + payload
    if version == "garbage":
        return b"PROXY TCP4 not-an-address\r\n"
    return b""


def relay(host: str, port: int, client: str, version: str) -> None:
    connection = socket.create_connection((host, port))
    connection.sendall(header(version, client, 50000, (host, port)))
    selector = selectors.DefaultSelector()
    selector.register(connection, selectors.EVENT_READ)
    selector.register(sys.stdin.fileno(), selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj is connection:
                data = connection.recv(65536)
                if not data:
                    return
                os.write(sys.stdout.fileno(), data)
            else:
                data = os.read(sys.stdin.fileno(), 65536)
                if not data:
                    connection.shutdown(socket.SHUT_WR)
                    selector.unregister(sys.stdin.fileno())
                    continue
                connection.sendall(data)


if __name__ == "__main__":
    relay(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
