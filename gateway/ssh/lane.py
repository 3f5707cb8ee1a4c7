"""What both lanes share: a listener, their live sessions, and audited writes to their trail."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, ClassVar, Protocol

import asyncssh

from gateway.config import ListenerSettings
from gateway.crypto.algorithms import UserKeyRules
from gateway.crypto.upstream_ca import load_private_key
from gateway.domain.audit.trail import ActorType, AuditEvent, Trail
from gateway.domain.lockout import source_key
from gateway.errors import PamgateError, StoreError
from gateway.services import GatewayServices
from gateway.ssh.human.forwarding import LocalForward
from gateway.ssh.listener import listen_with_connection_class
from gateway.ssh.proxy_protocol import ProxyProtocolReceiver
from gateway.ssh.server_connection import LaneServerConnection
from gateway.ssh.startups import StartupLimiter, StartupLimits
from gateway.ssh.watch import SessionWatch

logger = logging.getLogger("pamgate.lane")

FORWARDING_REFUSED = "forwarding is not permitted through pamgate"


def too_many_sessions(conn: asyncssh.SSHServerConnection | None, limit: int) -> str:
    """Why a new session channel on ``conn`` is refused (``MaxSessions``), or ""."""
    if isinstance(conn, LaneServerConnection) and conn.open_sessions() >= limit:
        return f"too many sessions on one connection (max_sessions = {limit})"
    return ""


class LaneSession(Protocol):
    """A session of the lane, as the lane's stop sees it."""

    def terminate(self, reason: str) -> None: ...


class RefusesForwarding:
    """Server mixin: port and socket forwarding is refused and audited, except local
    forwards (``ssh -L``) that :meth:`local_forward` lets through to the policy.

    The class it is mixed into implements :meth:`refuse_channel`.
    """

    def refuse_channel(self, kind: str, **details: str) -> None:
        """Audit a refused channel or forwarding request."""
        raise NotImplementedError

    def local_forward(self) -> LocalForward | None:
        """A forward the policy will decide on; None (the default) refuses at once."""
        return None

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Awaitable[asyncssh.SSHTCPSession[bytes]]:
        forward = self.local_forward()
        if forward is not None:
            return self._open_forward(forward, dest_host, dest_port)
        self.refuse_channel("local-port-forwarding", destination=f"{dest_host}:{dest_port}")
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, FORWARDING_REFUSED
        )

    async def _open_forward(
        self, forward: LocalForward, dest_host: str, dest_port: int
    ) -> asyncssh.SSHTCPSession[bytes]:
        try:
            return await forward.open(dest_host, dest_port)
        except PamgateError as exc:
            self.refuse_channel(
                "local-port-forwarding", destination=f"{dest_host}:{dest_port}", why=str(exc)
            )
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, f"{FORWARDING_REFUSED}: {exc}"
            ) from None

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        self.refuse_channel("remote-port-forwarding", listen=f"{listen_host}:{listen_port}")
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        self.refuse_channel("unix-socket-forwarding", destination=dest_path[:200])
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, FORWARDING_REFUSED
        )

    def unix_server_requested(self, listen_path: str) -> bool:
        self.refuse_channel("unix-socket-remote-forwarding", listen=listen_path[:200])
        return False


class RefusesAgentAndX11:
    """Server-connection mixin: agent and X11 forwarding requests are refused and audited."""

    _owner: object

    async def attach_x11_listener(self, *args: object, **kwargs: object) -> None:
        if isinstance(self._owner, RefusesForwarding):
            self._owner.refuse_channel("x11-forwarding")

    async def create_agent_listener(self) -> bool:
        if isinstance(self._owner, RefusesForwarding):
            self._owner.refuse_channel("agent-forwarding")
        return False


class Lane:
    """A listener and its running session tasks; subclasses say which and how."""

    #: ``human`` or ``machine``, for logs and messages.
    name: ClassVar[str]
    #: The audit trail this lane's events go to.
    trail: ClassVar[Trail]
    #: The SSH server connection class (each lane authenticates its own way).
    connection_class: ClassVar[type[LaneServerConnection]]
    #: The user keys and signature algorithms the lane accepts (and advertises).
    key_rules: ClassVar[UserKeyRules]

    def __init__(self, services: GatewayServices) -> None:
        self.services = services
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Sessions of this lane; ended ones drop out as they are collected.
        self.sessions: weakref.WeakSet[LaneSession] = weakref.WeakSet()
        #: Checks the live sessions each second (revocation, disabling, termination).
        self.watch = SessionWatch(services, self.track_task)
        #: While the node drains: why new sessions are refused (set by the node).
        self.draining: str | None = None
        settings = self.settings
        prefix = services.config.auth.source_ipv6_prefix
        #: Unauthenticated connections (max_startups, per_source_max_startups).
        self.startups = StartupLimiter(
            self.name,
            StartupLimits(*settings.startups, per_source=settings.per_source_max_startups),
            lambda address: source_key(address, prefix),
        )

    @property
    def settings(self) -> ListenerSettings:
        """The lane's listener settings."""
        raise NotImplementedError

    @property
    def host_key_path(self) -> Path:
        """The private host key the lane presents."""
        raise NotImplementedError

    def new_server(self) -> asyncssh.SSHServer:
        """The server object for one new client connection."""
        raise NotImplementedError

    async def start(self, *, reuse_port: bool = False) -> None:
        """Start listening on the configured address and port; ``reuse_port`` shares
        the port with the node's other relay worker processes (``SO_REUSEPORT``)."""
        settings = self.settings
        host_key = load_private_key(self.host_key_path, f"{self.name} lane host")
        self._acceptor = await listen_with_connection_class(
            settings.address,
            settings.port,
            connection_class=self.connection_class,
            prepare=self.prepare_connection,
            wrap=self._receive_proxy_header if settings.proxy_protocol_from else None,
            server_factory=self.new_server,
            server_host_keys=[host_key],
            # What server-sig-algs advertises; gateway.ssh.user_keys enforces it.
            signature_algs=list(self.key_rules.advertised),
            encoding=None,
            line_editor=False,
            allow_pty=True,
            x11_forwarding=False,
            agent_forwarding=False,
            login_timeout=settings.login_grace_time_seconds,
            keepalive_interval=30,
            reuse_port=reuse_port,
        )
        logger.info("%s lane listening on %s:%s", self.name, settings.address, self.port)

    def _receive_proxy_header(self, connection: asyncssh.SSHServerConnection) -> asyncio.Protocol:
        """The connection behind a reader of the PROXY header trusted balancers send."""
        return ProxyProtocolReceiver(
            connection, self.settings.trusted_proxies, self._proxy_header_refused
        )

    def _proxy_header_refused(self, peer: str, reason: str) -> None:
        self.record_soon(AuditEvent(
            actor="-", actor_type=ActorType.GATEWAY, action="connection.refused",
            outcome="failure", source=peer, reason=reason,
            details={"lane": self.name, "proxy_protocol_from": self.settings.proxy_protocol_from},
        ))  # fmt: skip

    def prepare_connection(self, connection: asyncssh.SSHServerConnection) -> None:
        """Give a newly accepted connection the lane's startup limiter."""
        if isinstance(connection, LaneServerConnection):
            connection.startups = self.startups

    @property
    def port(self) -> int:
        """The bound port (useful when the config asks for port 0)."""
        assert self._acceptor is not None
        return self._acceptor.get_port()

    def track_task(self, task: asyncio.Task[Any]) -> None:
        """Keep a session's background task alive until it finishes."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def record_soon(self, event: AuditEvent) -> None:
        """Append an event to this lane's trail from synchronous code, off the event loop.

        Only for records of refusals and intermediate steps: nothing waits
        for them, so nothing is granted if they fail (they are logged).
        """
        task = asyncio.get_running_loop().create_task(self.record(event))
        self.track_task(task)

    async def record(self, event: AuditEvent) -> bool:
        """Append an event to this lane's trail off the event loop; False (and logged) if that
        failed.

        Callers granting something must treat False as "do not grant".
        """
        try:
            await self.services.executors.run_db(self.services.audit.record, self.trail, event)
        except StoreError:  # AuditWriteFailed, or the database is unreachable
            logger.exception("audit write failed for %s", event.action)
            return False
        return True

    async def stop(self) -> None:
        """Stop accepting, end live sessions with a message, and record their end."""
        if self._acceptor is not None:
            self._acceptor.close()
        for session in list(self.sessions):
            session.terminate("the gateway is shutting down; the session was ended")
        self.watch.stop()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self._acceptor is not None:
            await self._acceptor.wait_closed()
