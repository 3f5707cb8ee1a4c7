"""Local port forwarding (``ssh -L``) on the human lane, to the destinations a rule lists.

A forwarded connection is opened by the gateway *through the target*: a new
upstream SSH connection (with a freshly minted certificate, like a session)
and a ``direct-tcpip`` channel on it, so the destination sees the target's
network view, never the gateway's. Each connection is audited:
``forward.opened`` (destination, target, account, authority) before any
byte flows, and ``forward.closed`` with the bytes each way and the
duration. A refusal is audited as ``channel.refused``. A forward is closed
within about two seconds of what allowed it ending, as a session is
(:mod:`gateway.ssh.human.live_rules`): its grant ending or revoked, its user
disabled, the policy no longer allowing it.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import asyncssh

from gateway.domain.access import (
    Allowed,
    Denied,
    NeedsApproval,
    fresh_code_refusal,
    parse_login_name,
)
from gateway.domain.audit.trail import ActorType, AuditEvent
from gateway.domain.live_checks import LiveChecks, WatchSubject
from gateway.domain.sign_in import SignedIn
from gateway.domain.transfer.policy import forward_allowed
from gateway.errors import PamgateError
from gateway.ssh.human.live_rules import HumanLiveRules
from gateway.ssh.relay import SessionHost
from gateway.ssh.upstream import connect_upstream

logger = logging.getLogger("pamgate.forwarding")


class ForwardRefused(PamgateError):
    """The policy does not let this login forward to that destination."""


class LocalForward:
    """One ``ssh -L`` connection: decided, audited and relayed through the target."""

    def __init__(
        self, host: SessionHost, signed_in: SignedIn, login_name: str, source: str
    ) -> None:
        self._host = host
        self._services = host.services
        self._signed_in = signed_in
        self._user = signed_in.user
        self._login_name = login_name
        self._source = source
        self._upstream_conn: asyncssh.SSHClientConnection | None = None
        self._client: asyncssh.SSHTCPChannel[bytes] | None = None
        self._upstream: asyncssh.SSHTCPChannel[bytes] | None = None
        self._early: list[bytes] = []
        self._sent = 0
        self._received = 0
        self._started = time.monotonic()
        self._closed = False
        self._destination_text = ""
        self._opened: AuditEvent | None = None
        #: What ends the forward (grant, user, policy), checked by the lane's watch.
        self._rules = HumanLiveRules(
            host.services.access, signed_in.user.name, source,
            login_certificate=signed_in.certificate_serial,
        )  # fmt: skip

    def decide(self, dest_host: str, dest_port: int) -> Allowed:
        """The access decision, if it allows the login's target and the rule ``host:port``.

        Asks the one access decision afresh for each forwarded connection.
        Raises ForwardRefused with a reason for the audit trail and the client.
        """
        login = parse_login_name(self._login_name)
        if login.target is None:
            raise ForwardRefused("log in as USER:TARGET to forward ports through a target")
        certificate = self._signed_in.certificate
        if certificate is not None:
            refused = self._services.login_certificates.new_channel_refused_because(certificate)
            if refused:
                raise ForwardRefused(refused)
        decision = self._services.access.decide(
            self._user.name, login.target, login.account, source=self._source
        )
        if isinstance(decision, Denied):
            raise ForwardRefused(decision.reason)
        if isinstance(decision, NeedsApproval):
            raise ForwardRefused(f"{decision.reason}: open a session to request a grant first")
        refused = fresh_code_refusal(decision, fresh_code=self._signed_in.fresh_code)
        if refused:
            raise ForwardRefused(refused)
        if not forward_allowed(decision.rule, dest_host, dest_port):
            raise ForwardRefused(
                f"rule {decision.rule.id} does not allow forwarding to {dest_host}:{dest_port}"
            )
        return decision

    async def open(self, dest_host: str, dest_port: int) -> asyncssh.SSHTCPSession[bytes]:
        """Decide, audit, connect through the target; the client side's session."""
        self._destination_text = f"{dest_host}:{dest_port}"
        allowed = await self._services.executors.run_db(self.decide, dest_host, dest_port)
        target, account = allowed.target, allowed.account
        opened = AuditEvent(
            actor=self._user.name, actor_type=ActorType.HUMAN, action="forward.opened",
            target=target.name, account=account, source=self._source,
            authority=allowed.authority, details={"destination": self._destination_text},
        )  # fmt: skip
        if not await self._host.record(opened):
            raise ForwardRefused("the forwarded connection could not be audited")
        self._opened = opened
        services = self._services
        credential = None
        legacy_key = None
        if target.upstream_auth == "certificate":
            credential = await self._services.executors.run_db(
                services.upstream_ca.mint_upstream_certificate,
                user=self._user.name, account=account, session_id=services.ledger.new_session_id(),
                port_forwarding=True,
            )  # fmt: skip
        else:
            legacy_key = services.config.resolve_path(target.key_file)  # type: ignore[arg-type]
        try:
            self._upstream_conn = await connect_upstream(
                target, account, credential, legacy_key_path=legacy_key,
                timeout=services.config.upstream.connect_timeout_seconds,
            )  # fmt: skip
        except PamgateError as exc:
            self.closed(str(exc))
            raise
        try:
            self._upstream, _ = await self._upstream_conn.create_connection(
                lambda: _ForwardChannel(self, "target"), dest_host, dest_port
            )
        except asyncssh.ChannelOpenError as exc:
            self._upstream_conn.close()
            self.closed(f"the target could not connect: {exc.reason}")
            raise
        self._rules.admitted(allowed)
        self._host.watch.add(self)
        return _ForwardChannel(self, "client")

    # -- what the lane's watch asks (gateway/ssh/watch.py) ------------------

    @property
    def watch_subject(self) -> WatchSubject:
        return self._rules.subject(None)

    @property
    def watch_finished(self) -> bool:
        return self._closed

    def check_time(self) -> str | None:
        # Nobody to warn: a forward has no terminal of its own.
        return self._rules.check_time(lambda _warning: None)

    def ended_because(self, checks: LiveChecks) -> str | None:
        return self._rules.revoked_because(checks)

    def warn(self, message: str) -> None:
        pass  # a forward has no terminal of its own: its connection's session is warned

    def terminate(self, reason: str) -> None:
        self.closed(reason)

    # -- relaying -------------------------------------------------------------

    def client_ready(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self._client = chan
        for data in self._early:
            chan.write(data)
        self._early.clear()
        if self._upstream is not None:
            self._upstream.resume_reading()

    def from_client(self, data: bytes) -> None:
        self._sent += len(data)
        if self._upstream is not None:
            self._upstream.write(data)

    def from_target(self, data: bytes) -> None:
        self._received += len(data)
        if self._client is None:
            # The destination spoke first (a banner) before the client's channel opened.
            self._early.append(data)
            if self._upstream is not None:
                self._upstream.pause_reading()
            return
        self._client.write(data)

    def client_eof(self) -> None:
        if self._upstream is not None:
            self._upstream.write_eof()

    def target_eof(self) -> None:
        if self._client is not None:
            self._client.write_eof()

    def pause(self, side: str) -> None:
        """``side``'s window is full: stop reading from the other side."""
        other = self._upstream if side == "client" else self._client
        if other is not None:
            other.pause_reading()

    def resume(self, side: str) -> None:
        other = self._upstream if side == "client" else self._client
        if other is not None:
            other.resume_reading()

    def closed(self, reason: str = "") -> None:
        """Either side closed: close the other, and audit the connection's totals once."""
        if self._closed:
            return
        self._closed = True
        self._host.watch.discard(self)
        for chan in (self._client, self._upstream):
            if chan is not None:
                chan.close()
        if self._upstream_conn is not None:
            self._upstream_conn.close()
        if self._opened is None:
            return
        event = dataclasses.replace(
            self._opened,
            action="forward.closed",
            reason=reason,
            details={
                "destination": self._destination_text,
                "bytes_to_destination": self._sent,
                "bytes_from_destination": self._received,
                "seconds": round(time.monotonic() - self._started, 3),
            },
        )
        self._host.record_soon(event)


class _ForwardChannel(asyncssh.SSHTCPSession[bytes]):
    """One end of a forward: the client's ``direct-tcpip`` channel, or the one on the target."""

    def __init__(self, forward: LocalForward, side: str) -> None:
        self._forward = forward
        self._side = side  # "client" or "target"

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        if self._side == "client":
            self._forward.client_ready(chan)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self._side == "client":
            self._forward.from_client(data)
        else:
            self._forward.from_target(data)

    def eof_received(self) -> bool:
        if self._side == "client":
            self._forward.client_eof()
        else:
            self._forward.target_eof()
        return True

    def pause_writing(self) -> None:
        self._forward.pause(self._side)

    def resume_writing(self) -> None:
        self._forward.resume(self._side)

    def connection_lost(self, exc: Exception | None) -> None:
        who = "client" if self._side == "client" else "destination"
        self._forward.closed(f"{who} closed" if exc is None else f"{who} lost: {exc}")
