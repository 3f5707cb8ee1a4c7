"""Listening for SSH with our own server connection class.

asyncssh's public ``listen()`` always builds its own connection class. The
lanes need subclasses (partial-success authentication on the human lane,
strict certificate checks on the machine lane), so this goes through
``asyncssh.connection._listen``, an internal of the pinned asyncssh 2.24.1.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any, cast

import asyncssh
from asyncssh.connection import _listen


async def listen_with_connection_class(
    host: str,
    port: int,
    *,
    connection_class: type[asyncssh.SSHServerConnection],
    prepare: Callable[[asyncssh.SSHServerConnection], None] | None = None,
    wrap: Callable[[asyncssh.SSHServerConnection], asyncio.Protocol] | None = None,
    backlog: int = 100,
    reuse_port: bool = False,
    **options: Any,
) -> asyncssh.SSHAcceptor:
    """Like :func:`asyncssh.listen`, but each connection is a ``connection_class``,
    handed to ``prepare`` (if given) before it sees its socket, and to ``wrap`` (if
    given), whose protocol then receives the socket first (the PROXY protocol).
    ``reuse_port``: set ``SO_REUSEPORT``, so that several relay worker processes
    listen on the same port and the kernel spreads connections over them.

    ``options`` are :class:`asyncssh.SSHServerConnectionOptions` keywords.
    No OpenSSH server config file is read.
    """
    loop = asyncio.get_running_loop()
    server_options = await asyncssh.SSHServerConnectionOptions.construct(
        None, config=(), host=host, port=port, tunnel=(), family=(), **options
    )
    server_options.proxy_command = None

    def connection_factory() -> asyncssh.SSHServerConnection:
        connection = connection_class(loop, server_options, None, None)
        if prepare is not None:
            prepare(connection)
        if wrap is None:
            return connection
        # _listen only hands the factory to loop.create_server, which takes any protocol.
        return cast(asyncssh.SSHServerConnection, wrap(connection))

    return await _listen(
        server_options,
        None,
        loop,
        socket.AI_PASSIVE,
        backlog,
        None,
        True,
        reuse_port or None,
        connection_factory,
        "Creating SSH listener on",
    )
