"""One relayed session, start to end: set up by the domain, connected upstream, piped, closed once.

A lane's session handler (:mod:`gateway.ssh.human.session`,
:mod:`gateway.ssh.machine.session`) decides *whether* and *where* a session
may go; :class:`RelayedSession` then does the same for both lanes:

1. setup in the domain (:class:`~gateway.domain.session_setup.SessionSetup`:
   credential, recording, ledger);
2. the connection to the target (pinned host key) and the matching channel
   there: pty, shell, exec or subsystem, with allow-listed environment;
3. the bytes, through a :class:`~gateway.ssh.pipe.RelayPipe`;
4. the lane's watch, which ends the session when what allowed it ends;
5. the end, recorded once however it comes: exit status or signal passed to
   the client, client gone, target lost, terminated by the gateway.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, cast

import asyncssh

from gateway.domain.access import Destination
from gateway.domain.audit.trail import ActorType, AuditEvent
from gateway.domain.live_checks import LiveChecks, WatchSubject
from gateway.domain.session_setup import OpenedSession, Terminal
from gateway.domain.sessions import SessionEnd, SessionStart
from gateway.errors import HostKeyMismatch, PamgateError
from gateway.services import GatewayServices
from gateway.ssh.channel import GATEWAY_EXIT_STATUS, SessionChannel
from gateway.ssh.gateway_program import GatewayProgram, RunningProgram
from gateway.ssh.pipe import PayloadFilter, RelayPipe, TargetExit, UpstreamSession
from gateway.ssh.upstream import connect_upstream
from gateway.ssh.watch import SessionWatch

logger = logging.getLogger("pamgate.relay")


class SessionHost(Protocol):
    """What a session needs from its lane."""

    services: GatewayServices
    #: Checks the lane's live sessions each second (revocation, disabling, termination).
    watch: SessionWatch
    #: While the node drains: why new sessions are refused (None otherwise).
    draining: str | None

    def track_task(self, task: asyncio.Task[Any]) -> None: ...

    def record_soon(self, event: AuditEvent) -> None: ...

    async def record(self, event: AuditEvent) -> bool: ...


class LiveRules(Protocol):
    """What ends a lane's live session besides a termination from the console."""

    def subject(self, session_id: str | None) -> WatchSubject:
        """What the session depends on, for the watch's queries."""

    def check_time(self, tell_user: Callable[[str], None]) -> str | None:
        """Time-based limits (a grant's end), on the event loop each second; why to end, or None."""

    def revoked_because(self, checks: LiveChecks) -> str | None:
        """Why the session must end given the watch's ``checks`` (off the loop), or None."""


def filter_environment(env: Mapping[str, str], allowed: list[str]) -> dict[str, str]:
    """Keep only allow-listed variables; ``LC_*`` style patterns match prefixes."""
    return {
        name: value
        for name, value in env.items()
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in allowed)
    }


#: What a handler's admission settles: where to go (a target, or a program the gateway runs
#: itself), and the file-transfer filter, if any.
Admitted = tuple[Destination | GatewayProgram, PayloadFilter | None]
#: The target name the ledger records for sessions that reach the gateway itself.
GATEWAY_TARGET = "pamgate"


class RelayedSession:
    """One session relayed from a client's channel to a target (see the module docstring)."""

    def __init__(
        self,
        channel: SessionChannel,
        host: SessionHost,
        *,
        lane: str,
        actor_type: ActorType,
        actor: str,
        source: str,
        rules: LiveRules,
    ) -> None:
        self._channel = channel
        self._host = host
        self._services = host.services
        self.lane = lane
        self._actor_type = actor_type
        self.actor = actor
        self.source = source
        self._rules = rules
        self._opened: OpenedSession | None = None
        #: Ends the target side: closes the target connection, or stops the gateway's program.
        self._close_target: Callable[[], None] | None = None
        self._pipe: RelayPipe | None = None
        self._filter: PayloadFilter | None = None
        self._finished = False

    @property
    def session_id(self) -> str | None:
        """The ledger's id, once the session is set up."""
        return self._opened.session_id if self._opened is not None else None

    # -- the session's life ---------------------------------------------------

    async def run(
        self,
        admit: Callable[[], Awaitable[Admitted | None]],
        record_refusal: Callable[[str], Awaitable[None]],
    ) -> None:
        """Admit (the lane's decision), then relay; a refusal is audited and told to the user.

        ``admit`` returns None when it answered the client itself (a gateway
        command, a cancelled wait).
        """
        try:
            if self._host.draining:
                raise PamgateError(self._host.draining)
            admitted = await admit()
            if admitted is not None:
                await self._start(*admitted)
        except PamgateError as exc:
            if self._opened is None:
                await record_refusal(str(exc))
            self._channel.tell_user(str(exc))
            self._finish("failed", reason=str(exc))
            self._channel.exit(GATEWAY_EXIT_STATUS)
        except Exception as exc:  # the session must end cleanly, never hang
            logger.exception("session setup failed")
            self._channel.tell_user(
                f"internal error while starting the session ({type(exc).__name__})"
            )
            self._finish("failed", reason=f"internal error: {exc!r}")
            self._channel.exit(GATEWAY_EXIT_STATUS)

    async def _start(
        self, destination: Destination | GatewayProgram, payload_filter: PayloadFilter | None
    ) -> None:
        services, request = self._services, self._channel.request
        self._filter = payload_filter
        if isinstance(destination, GatewayProgram):
            # The gateway itself, as target "pamgate": the console or an admin command.
            target, start = None, SessionStart(
                lane=self.lane, user=self.actor, target=GATEWAY_TARGET,
                account=destination.name, source=self.source,
                authority=destination.authority, kind=destination.name,
                command=request.command,
            )  # fmt: skip
        else:
            target, start = destination.target, SessionStart(
                lane=self.lane, user=self.actor, target=destination.target.name,
                account=destination.account, source=self.source,
                authority=destination.authority, kind=request.kind,
                command=request.command if request.subsystem is None else request.subsystem,
            )  # fmt: skip
        terminal = None
        if request.term_type is not None:
            terminal = Terminal(request.term_type, request.term_size[0], request.term_size[1])
        opened = await services.executors.run_db(
            services.session_setup.open, start, target, terminal
        )
        self._opened = opened
        if self._channel.gone:
            # The client left while the session was set up: it still ends properly.
            self._finish("closed", reason="client disconnected")
            return
        loop = asyncio.get_running_loop()
        writer = opened.tap.writer

        def on_error(message: str) -> None:
            loop.call_soon_threadsafe(self._recording_failed, message)

        def on_drained() -> None:
            loop.call_soon_threadsafe(self._recording_drained)

        writer.on_error = on_error
        writer.on_drained = on_drained
        pipe = RelayPipe(self._channel, opened.tap, payload_filter, self._target_closed)
        self._pipe = pipe
        if isinstance(destination, GatewayProgram):
            program = RunningProgram(pipe)
            self._close_target = program.close
            size = (request.term_type, *request.term_size[:2]) if request.term_type else None
            # The program's audit events name the session that ran it.
            env = {**destination.env, "PAMGATE_OPERATOR_SESSION": opened.session_id}
            await program.start(dataclasses.replace(destination, env=env), size)
        else:
            await self._connect(destination, opened, pipe)
        if not self._channel.is_open:
            self._close_target_side()
            self._finish("closed", reason="client disconnected")
            return
        self._channel.attach(pipe)
        self._host.watch.add(self)

    async def _connect(
        self, destination: Destination, opened: OpenedSession, pipe: RelayPipe
    ) -> None:
        """Connect to the target (pinned host key) and open the client's kind of channel."""
        services, request = self._services, self._channel.request
        target, account = destination.target, destination.account
        try:
            connection = await connect_upstream(
                target, account, opened.credential, legacy_key_path=opened.legacy_key_path,
                timeout=services.config.upstream.connect_timeout_seconds,
            )  # fmt: skip
        except HostKeyMismatch as exc:
            await self._host.record(self.event(
                "upstream.host_key_mismatch", "refused", reason=str(exc), target=target.name,
                session_id=opened.session_id,
            ))  # fmt: skip
            raise
        self._close_target = connection.close
        if not self._channel.is_open:
            return
        env = filter_environment(self._channel.environment(), services.config.session.env_allow)
        pty = request.term_type is not None
        try:
            await connection.create_session(
                lambda: UpstreamSession(pipe),
                request.command if request.subsystem is None else (),
                subsystem=request.subsystem,
                # asyncssh wants a Mapping[bytes | str, ...], which (invariant in its key)
                # a dict[str, str] is not, though asyncssh only reads it.
                env=cast("Mapping[bytes | str, bytes | str]", env),
                send_env=None,
                encoding=None,
                # Without a pty, () is asyncssh's default for each: no pty is requested.
                request_pty="force" if pty else (),
                term_type=request.term_type if pty else (),
                term_size=request.term_size if pty else (),
                term_modes=request.term_modes if pty else (),
            )
        except asyncssh.ChannelOpenError as exc:
            raise PamgateError(
                f"target {target.name!r} refused the session: {exc.reason}"
            ) from None

    def _close_target_side(self) -> None:
        if self._close_target is not None:
            self._close_target()

    def send_to_target(self, data: bytes) -> None:
        """Write the gateway's own bytes to the target's channel (an SFTP path check)."""
        upstream = self._pipe.upstream if self._pipe is not None else None
        if data and upstream is not None:
            upstream.write(data)

    def _target_closed(self, ended: TargetExit) -> None:
        """The target channel closed: pass on its exit status, or say why not."""
        if self._finished:
            return  # the gateway ended it (terminate), or the client left first
        self._close_target_side()
        if ended.exit_signal is not None:
            signal, core_dumped, message, lang = ended.exit_signal
            self._finish("closed", exit_signal=signal)
            self._channel.exit_with_signal(signal, core_dumped, message, lang)
        elif ended.exit_status is not None:
            self._finish("closed", exit_status=ended.exit_status)
            self._channel.exit(ended.exit_status)
        else:
            why = (
                str(ended.error)
                if ended.error
                else ("the target closed the session without an exit status")
            )
            reason = f"connection to target lost: {why}"
            self._finish("failed", reason=reason)
            self._channel.tell_user(reason)
            self._channel.exit(GATEWAY_EXIT_STATUS)

    def channel_closed(self) -> None:
        """The client's channel is gone."""
        self._host.watch.discard(self)
        self._close_target_side()
        if self._opened is None:
            return
        ended = self._pipe.exit if self._pipe is not None else None
        if ended is not None:
            # The command had ended: its status stays in the record whoever closed first.
            signal = ended.exit_signal[0] if ended.exit_signal else None
            self._finish("closed", exit_status=ended.exit_status, exit_signal=signal)
        else:
            self._finish("closed", reason="client disconnected")

    def warn(self, message: str) -> None:
        """Tell the user something about the session without ending it (a node draining)."""
        if not self._channel.gone:
            self._channel.tell_user(message)

    def terminate(self, reason: str) -> None:
        """End the session from the gateway's side (shutdown, revocation), telling the user why."""
        if self._channel.gone:
            return
        if self._pipe is not None:
            self._pipe.flush()
        self._channel.tell_user(reason)
        self._close_target_side()
        self._finish("interrupted", reason=reason)
        self._channel.exit(GATEWAY_EXIT_STATUS)

    def _finish(
        self,
        status: str,
        *,
        exit_status: int | None = None,
        exit_signal: str | None = None,
        reason: str = "",
    ) -> None:
        """Record the session's end once; the disk and database work runs off the event loop."""
        if self._finished:
            return
        self._finished = True
        pipe = self._pipe
        end = SessionEnd(
            status=status,
            bytes_to_target=pipe.bytes_to_target if pipe else 0,
            bytes_from_target=pipe.bytes_from_target if pipe else 0,
            exit_status=exit_status,
            exit_signal=exit_signal,
            reason=reason,
        )
        task = asyncio.get_running_loop().create_task(self._close_out(end))
        self._host.track_task(task)

    async def _close_out(self, end: SessionEnd) -> None:
        """The file-transfer filter's last events first, then the session's end: the trail
        tells what happened to the files before it says the session is over."""
        if self._filter is not None:
            await self._filter.finished(end.exit_status)
        if self._opened is not None:
            executors = self._services.executors
            await executors.run_files(self._services.session_setup.close, self._opened, end)
            await executors.run_extraction(
                self._services.session_setup.extract_commands, self._opened
            )

    # -- the recording --------------------------------------------------------

    def _recording_drained(self) -> None:
        if self._pipe is not None:
            self._pipe.recording_drained()

    def _recording_failed(self, message: str) -> None:
        self.terminate(f"{message}; the session was ended because it can no longer be recorded")

    # -- what the lane's watch asks (gateway/ssh/watch.py) ----------------------

    @property
    def watch_subject(self) -> WatchSubject:
        return self._rules.subject(self.session_id)

    @property
    def watch_finished(self) -> bool:
        return self._finished

    def check_time(self) -> str | None:
        reason = self._rules.check_time(self._channel.tell_user)
        return f"{reason}; the session was closed" if reason else None

    def ended_because(self, checks: LiveChecks) -> str | None:
        """A termination asked for (console), or the lane's own revocation checks."""
        reason = None
        if self.session_id is not None:
            reason = checks.terminations.get(self.session_id)
        reason = reason or self._rules.revoked_because(checks)
        return f"{reason}; the session was closed" if reason else None

    # -- the lane's audit events -------------------------------------------------

    def event(
        self,
        action: str,
        outcome: str,
        *,
        reason: str = "",
        target: str | None = None,
        account: str | None = None,
        session_id: str | None = None,
        authority: str | None = None,
        **details: object,
    ) -> AuditEvent:
        """An event of this session's actor for the lane's trail."""
        return AuditEvent(
            actor=self.actor, actor_type=self._actor_type, action=action, outcome=outcome,
            target=target, account=account, session_id=session_id, source=self.source,
            reason=reason, authority=authority, details=details,
        )  # fmt: skip

    async def record(self, event: AuditEvent) -> bool:
        """Append to the lane's trail; False (and logged) if that failed."""
        return await self._host.record(event)

    def track(self, task: asyncio.Task[Any]) -> None:
        """Keep a background task of the session alive until it finishes."""
        self._host.track_task(task)

    @property
    def channel(self) -> SessionChannel:
        return self._channel
