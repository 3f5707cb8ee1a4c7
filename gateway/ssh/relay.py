"""The session relay shared by both lanes: one client channel joined to one target channel.

:class:`RelayedSession` is the server side of a session channel from a
client's ``ssh``. A lane subclasses it to decide *whether* and *where* the
session may go (:meth:`RelayedSession._admit`); this module does the rest
the same way for both lanes: it opens the recording, records the session in
the ledger, mints the upstream certificate, connects to the target and opens
the matching channel there, :class:`UpstreamSession`. From then on bytes flow
both ways with flow control: when one side's send window fills, the other
side stops reading.

Relayed: pty (type, size, modes), shell, exec and subsystems, window
changes, signals, break, EOF in either direction, stdout and stderr
separately, and the exit status or exit signal. Environment variables pass
only if allow-listed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import logging
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

import asyncssh

from gateway.domain.access import Destination, parse_login_name
from gateway.domain.audit.trail import ActorType, AuditEvent
from gateway.domain.recordings.indexing import command_indexer
from gateway.domain.sessions import SessionEnd, SessionStart
from gateway.errors import DestinationError, HostKeyMismatch, PamgateError, StoreError
from gateway.services import GatewayServices
from gateway.ssh.dialog import TerminalDialog
from gateway.ssh.recording_tap import SessionTap
from gateway.ssh.upstream import connect_upstream
from gateway.ssh.watch import LiveChecks, SessionWatch, WatchSubject

logger = logging.getLogger("pamgate.relay")

#: Exit status reported to the client when the gateway itself ends the session.
GATEWAY_EXIT_STATUS = 255


class SessionHost(Protocol):
    """What a session needs from its lane."""

    services: GatewayServices
    #: Checks the lane's live sessions each second (revocation, disabling, termination).
    watch: SessionWatch

    def track_task(self, task: asyncio.Task[Any]) -> None: ...

    def record_soon(self, event: AuditEvent) -> None: ...

    async def record(self, event: AuditEvent) -> bool: ...


def filter_environment(env: Mapping[str, str], allowed: list[str]) -> dict[str, str]:
    """Keep only allow-listed variables; ``LC_*`` style patterns match prefixes."""
    return {
        name: value
        for name, value in env.items()
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in allowed)
    }


class PayloadFilter(Protocol):
    """A hook between the two channels of a session (file-transfer audit and policy).

    It sees every payload chunk and returns what to pass on; it may hold
    bytes back (a partial packet) and answer the client itself.
    """

    def to_target(self, data: bytes) -> bytes: ...

    def to_client(self, data: bytes) -> bytes: ...

    def finished(self) -> None: ...


class UpstreamSession(asyncssh.SSHClientSession[bytes]):
    """The target side of a relayed session: forwards everything to the client."""

    def __init__(self, relay: RelayedSession) -> None:
        self._relay = relay

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self._relay.from_target(data, datatype)

    def eof_received(self) -> bool:
        self._relay.target_eof()
        # Stay half-open: the exit status usually follows the EOF.
        return True

    def pause_writing(self) -> None:
        self._relay.pause_client()

    def resume_writing(self) -> None:
        self._relay.resume_client()

    def connection_lost(self, exc: Exception | None) -> None:
        self._relay.target_closed(exc)


class RelayedSession(asyncssh.SSHServerSession[bytes]):
    """The client side of a relayed session; lanes subclass it and implement ``_admit``."""

    #: ``human`` or ``machine``: the ledger row and the audit trail of the session.
    lane: ClassVar[str]
    #: Who the actor of this lane's events is.
    actor_type: ClassVar[ActorType]

    def __init__(self, host: SessionHost, *, actor: str, login_name: str, source: str) -> None:
        self._host = host
        self._services = host.services
        self._actor = actor
        self._login_name = login_name
        self._source = source
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._command: str | None = None
        self._subsystem: str | None = None
        self._term_type: str | None = None
        self._term_size: tuple[int, int, int, int] = (80, 24, 0, 0)
        self._term_modes: Mapping[int, int] = {}
        self._dialog: TerminalDialog | None = None
        self._pending = bytearray()
        #: Set while a gateway command reads all of the client's input (see read_input).
        self._input_complete: asyncio.Event | None = None
        self._input_limit = 0
        self._client_eof = False
        self._upstream_conn: asyncssh.SSHClientConnection | None = None
        self._upstream: asyncssh.SSHClientChannel[bytes] | None = None
        self._session_id: str | None = None
        self._start: SessionStart | None = None
        self._bytes_to_target = 0
        self._bytes_from_target = 0
        self._finished = False
        self._client_gone = False
        self._tap: SessionTap | None = None
        #: Why upstream reading is paused: the client's window, the recording's backlog.
        self._client_full = False
        self._recording_full = False
        #: Set by a lane for file transfers: sees the payload both ways.
        self._filter: PayloadFilter | None = None
        #: Target stdout not yet sent to the client (see from_target).
        self._target_output: list[bytes] = []

    # -- what a lane decides --------------------------------------------

    async def _admit(self) -> Destination | None:
        """Settle where the session goes, or answer the client and return None."""
        raise NotImplementedError

    def _revoked_because(self, checks: LiveChecks) -> str | None:
        """Why the live session must end given the watch's ``checks`` (off the loop), or None."""
        return None

    def check_time(self) -> str | None:
        """Time-based limits checked on the event loop each second; why to end, or None."""
        return None

    # -- what the lane's watch asks (gateway/ssh/watch.py) ----------

    @property
    def watch_subject(self) -> WatchSubject:
        """What this session depends on; lanes add the user, grant or NHI."""
        return WatchSubject(session_id=self._session_id)

    @property
    def watch_finished(self) -> bool:
        return self._finished

    def ended_because(self, checks: LiveChecks) -> str | None:
        """A termination asked for (console), or the lane's own revocation checks."""
        reason = None
        if self._session_id is not None:
            reason = checks.terminations.get(self._session_id)
        reason = reason or self._revoked_because(checks)
        return f"{reason}; the session was closed" if reason else None

    # -- requests from the client -------------------------------------

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:  # type: ignore[override]
        self._chan = chan

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Mapping[int, int]
    ) -> bool:
        self._term_type = term_type
        self._term_size = term_size
        self._term_modes = term_modes
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self._command = command
        return True

    def session_started(self) -> None:
        assert self._chan is not None
        self._chan.pause_reading()
        self._dialog = TerminalDialog(self._chan, pty=self._term_type is not None)
        task = asyncio.get_running_loop().create_task(self._run())
        self._host.track_task(task)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self._upstream is not None:
            self._bytes_to_target += len(data)
            if self._tap is not None:
                self._tap.from_client(data)
            if self._filter is not None:
                data = self._filter.to_target(data)
            if data:
                self._upstream.write(data)
        elif self._dialog is not None and self._dialog.active:
            self._dialog.feed(data)
        elif self._input_complete is not None:
            self._pending += data
            if len(self._pending) > self._input_limit:
                self._input_complete.set()
        else:
            # Input that arrives before the target is connected is kept, and
            # reading stops so the client's window (not memory) bounds it.
            self._pending += data
            if self._chan is not None:
                self._chan.pause_reading()

    def eof_received(self) -> bool:
        self._client_eof = True
        if self._upstream is not None:
            self._upstream.write_eof()
        elif self._input_complete is not None:
            self._input_complete.set()
        elif self._dialog is not None:
            self._dialog.input_ended()
        return True

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self._term_size = (width, height, pixwidth, pixheight)
        if self._upstream is not None:
            if self._tap is not None:
                self._tap.resize(width, height)
            self._upstream.change_terminal_size(width, height, pixwidth, pixheight)

    def signal_received(self, signal: str) -> None:
        if self._upstream is not None:
            self._upstream.send_signal(signal)

    def break_received(self, msec: int) -> bool:
        if self._upstream is not None:
            self._upstream.send_break(msec)
            return True
        return False

    def pause_writing(self) -> None:
        self._client_full = True
        self._update_upstream_reading()

    def resume_writing(self) -> None:
        self._client_full = False
        self._update_upstream_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._client_gone = True
        if self._dialog is not None:
            self._dialog.close()
        if self._input_complete is not None:
            self._input_complete.set()
        self._host.watch.discard(self)
        if self._upstream_conn is not None:
            self._upstream_conn.close()
        if not self._finished and self._session_id is not None:
            self._finish("closed", reason="client disconnected")

    async def read_input(self, limit: int, timeout: float) -> bytes | None:
        """All of the client's stdin up to EOF, for a gateway command; None if too big or slow."""
        assert self._chan is not None
        self._input_complete, self._input_limit = asyncio.Event(), limit
        if self._client_eof or len(self._pending) > limit:
            self._input_complete.set()
        self._chan.resume_reading()
        try:
            await asyncio.wait_for(self._input_complete.wait(), timeout)
        except TimeoutError:
            return None
        finally:
            self._chan.pause_reading()
        data = bytes(self._pending)
        self._pending.clear()
        return None if len(data) > limit else data

    # -- calls from the upstream side -----------------------------------

    def from_target(self, data: bytes, datatype: asyncssh.DataType) -> None:
        """Forward target output to the client, keeping stderr separate.

        Stdout is gathered for the rest of this event-loop turn and sent as
        one write (:meth:`_send_target_output`): the target's packets are
        small (a pty gives sshd ~4 KiB per read), and each packet the
        gateway sends costs a cipher set-up, a recording event and a socket
        write. Waiting one turn adds microseconds, not a round trip.
        """
        self._bytes_from_target += len(data)
        chan = self._chan
        if chan is None or chan.is_closing():
            return
        if datatype == asyncssh.EXTENDED_DATA_STDERR:
            self._send_target_output()  # keeps stdout written before this stderr ahead of it
            self._tap_target_output(data, stderr=True)
            chan.write_stderr(data)
            return
        if not self._target_output:
            asyncio.get_running_loop().call_soon(self._send_target_output)
        self._target_output.append(data)

    def _send_target_output(self) -> None:
        """Record and send the stdout gathered since the last send."""
        if not self._target_output:
            return
        gathered = self._target_output
        data = gathered[0] if len(gathered) == 1 else b"".join(gathered)
        self._target_output = []
        chan = self._chan
        if chan is None or chan.is_closing():
            return
        self._tap_target_output(data, stderr=False)
        if self._filter is not None:
            data = self._filter.to_client(data)
        if data:
            chan.write(data)

    def _tap_target_output(self, data: bytes, *, stderr: bool) -> None:
        if self._tap is not None:
            self._tap.from_target(data, stderr=stderr)
            if self._tap.writer.backlogged and not self._recording_full:
                self._recording_full = True
                self._update_upstream_reading()

    def _update_upstream_reading(self) -> None:
        # Recording bytes are never dropped: if the disk falls behind, the
        # target waits, exactly as when the client's window is full.
        if self._upstream is None:
            return
        if self._client_full or self._recording_full:
            self._upstream.pause_reading()
        else:
            self._upstream.resume_reading()

    def _recording_drained(self) -> None:
        self._recording_full = False
        self._update_upstream_reading()

    def _recording_failed(self, message: str) -> None:
        self.terminate(f"{message}; the session was ended because it can no longer be recorded")

    def target_eof(self) -> None:
        """The target will send no more output."""
        self._send_target_output()
        if self._chan is not None and not self._chan.is_closing():
            self._chan.write_eof()

    def pause_client(self) -> None:
        """The target's window is full: stop reading from the client."""
        if self._chan is not None:
            self._chan.pause_reading()

    def resume_client(self) -> None:
        """The target can take more input."""
        if self._chan is not None:
            self._chan.resume_reading()

    def target_closed(self, exc: Exception | None) -> None:
        """The target channel closed: pass on its exit status, or say why not."""
        self._send_target_output()
        if self._finished and self._session_id is not None:
            return  # the gateway ended it (terminate), or the client left first
        upstream = self._upstream
        exit_status = upstream.get_exit_status() if upstream else None
        exit_signal = upstream.get_exit_signal() if upstream else None
        if self._upstream_conn is not None:
            self._upstream_conn.close()
        if exit_signal is not None:
            signal, core_dumped, message, lang = exit_signal
            self._finish("closed", exit_signal=signal)
            self._exit_with_signal(signal, core_dumped, message, lang)
        elif exit_status is not None:
            self._finish("closed", exit_status=exit_status)
            self._exit(exit_status)
        else:
            why = str(exc) if exc else "the target closed the session without an exit status"
            reason = f"connection to target lost: {why}"
            self._finish("failed", reason=reason)
            self._tell_user(f"{reason}")
            self._exit(GATEWAY_EXIT_STATUS)

    # -- the session's life ---------------------------------------------

    async def _run(self) -> None:
        try:
            destination = await self._admit()
            if destination is not None:
                await self._connect(destination)
        except PamgateError as exc:
            if self._session_id is None:
                await self._record_refusal(str(exc))
            self._tell_user(str(exc))
            self._finish("failed", reason=str(exc))
            self._exit(GATEWAY_EXIT_STATUS)
        except Exception as exc:  # the session must end cleanly, never hang
            logger.exception("session setup failed")
            self._tell_user(f"internal error while starting the session ({type(exc).__name__})")
            self._finish("failed", reason=f"internal error: {exc!r}")
            self._exit(GATEWAY_EXIT_STATUS)

    @property
    def session_kind(self) -> str:
        if self._subsystem is not None:
            return "subsystem"
        return "exec" if self._command is not None else "shell"

    async def _connect(self, destination: Destination) -> None:
        services = self._services
        target, account = destination.target, destination.account
        ledger = services.ledger
        session_id = ledger.new_session_id()
        authority = destination.authority
        if target.upstream_auth == "key":
            # A static target secret is a documented exception; say so in the record.
            authority += ";exception=legacy-static-key"
        start = SessionStart(
            lane=self.lane,
            user=self._actor,
            target=target.name,
            account=account,
            source=self._source,
            authority=authority,
            kind=self.session_kind,
            command=self._command if self._subsystem is None else self._subsystem,
        )
        credential = None
        legacy_key = None
        if target.upstream_auth == "certificate":
            credential = await asyncio.to_thread(
                services.upstream_ca.mint_upstream_certificate,
                user=start.user,
                account=account,
                session_id=session_id,
            )
        else:
            legacy_key = services.config.resolve_path(target.key_file)  # type: ignore[arg-type]
            logger.warning(
                'EXCEPTION: target %s uses a static legacy key (upstream_auth = "key")',
                target.name,
            )
        recordings = services.recordings
        writer = await asyncio.to_thread(
            recordings.start,
            session_id,
            width=self._term_size[0],
            height=self._term_size[1],
            term=self._term_type,
            metadata={
                "session": session_id,
                "lane": self.lane,
                "user": start.user,
                "target": start.target,
                "account": start.account,
                "source": start.source,
                "authority": start.authority,
                # Emergency access is flagged for the reviewers who replay it.
                "flagged": start.authority.startswith("breakglass:"),
                "kind": start.kind,
                "command": start.command,
                "node": services.config.node_name,
            },
        )
        try:
            await asyncio.to_thread(
                ledger.open, session_id, start, recording_path=recordings.relative(writer.path)
            )
        except StoreError as exc:
            await asyncio.to_thread(recordings.discard, writer)
            logger.error("refusing session: cannot record it: %s", exc)
            raise PamgateError(
                "the session cannot be recorded right now, so it is refused"
            ) from None
        loop = asyncio.get_running_loop()
        writer.on_error = lambda message: loop.call_soon_threadsafe(self._recording_failed, message)
        writer.on_drained = lambda: loop.call_soon_threadsafe(self._recording_drained)
        cap = None if self._term_type is not None else recordings.exec_payload_cap
        self._tap = SessionTap(writer, exec_payload_cap=cap)
        self._session_id, self._start = session_id, start
        try:
            self._upstream_conn = await connect_upstream(
                target,
                account,
                credential,
                legacy_key_path=legacy_key,
                timeout=services.config.upstream.connect_timeout_seconds,
            )
        except HostKeyMismatch as exc:
            await self._host.record(
                self._event(
                    "upstream.host_key_mismatch",
                    "refused",
                    reason=str(exc),
                    target=target.name,
                    session_id=session_id,
                )
            )
            raise
        if self._chan is None or self._chan.is_closing():
            self._upstream_conn.close()
            return
        env = filter_environment(self._chan.get_environment(), services.config.session.env_allow)
        pty_options = {}
        if self._term_type is not None:
            pty_options = {
                "request_pty": "force",
                "term_type": self._term_type,
                "term_size": self._term_size,
                "term_modes": self._term_modes,
            }
        try:
            upstream, _ = await self._upstream_conn.create_session(
                lambda: UpstreamSession(self),
                self._command if self._subsystem is None else (),
                subsystem=self._subsystem,
                env=env,
                send_env=None,
                encoding=None,
                **pty_options,
            )
        except asyncssh.ChannelOpenError as exc:
            raise PamgateError(
                f"target {target.name!r} refused the session: {exc.reason}"
            ) from None
        self._upstream = upstream
        if self._pending:
            self._bytes_to_target += len(self._pending)
            pending = bytes(self._pending)
            upstream.write(self._filter.to_target(pending) if self._filter else pending)
            self._pending.clear()
        if self._client_eof:
            upstream.write_eof()
        self._chan.resume_reading()
        self._host.watch.add(self)

    def _finish(
        self,
        status: str,
        *,
        exit_status: int | None = None,
        exit_signal: str | None = None,
        reason: str = "",
    ) -> None:
        """Record the session's end once: seal the recording, then write the end event.

        The disk and database work runs off the event loop.
        """
        if self._finished:
            return
        self._finished = True
        if self._filter is not None:
            self._filter.finished()
        if self._session_id is None or self._start is None:
            return
        end = SessionEnd(
            status=status,
            bytes_to_target=self._bytes_to_target,
            bytes_from_target=self._bytes_from_target,
            exit_status=exit_status,
            exit_signal=exit_signal,
            reason=reason,
        )
        task = asyncio.get_running_loop().create_task(
            asyncio.to_thread(self._close_out, self._session_id, self._start, end, self._tap)
        )
        self._host.track_task(task)

    def _close_out(
        self, session_id: str, start: SessionStart, end: SessionEnd, tap: SessionTap | None
    ) -> None:
        """Seal, record the end (with the recording's sha256), then extract commands."""
        recordings = self._services.recordings
        details: dict[str, object] = {}
        if tap is not None:
            details.update(tap.summary())
            sealed = recordings.seal(session_id, tap.writer)
            if sealed is None:
                details["recording_incomplete"] = tap.writer.failed or "unknown error"
            else:
                end = dataclasses.replace(
                    end,
                    recording_path=recordings.relative(sealed.path),
                    recording_sha256=sealed.sha256,
                )
        self._services.ledger.close(session_id, start, dataclasses.replace(end, details=details))
        if tap is not None:
            try:
                command_indexer(self._services.config).index(session_id)
            except (PamgateError, OSError) as exc:
                logger.warning("cannot extract commands of session %s: %s", session_id, exc)

    async def _record_refusal(self, reason: str) -> None:
        """Audit a session that was refused before it started (bad or forbidden destination)."""
        try:
            login = parse_login_name(self._login_name)
            target, account = login.target, login.account
        except DestinationError:
            target, account = None, None
        event = self._event("access.refused", "refused", reason=reason, target=target)
        # We are refusing either way; a failed write is logged by the lane.
        await self._host.record(dataclasses.replace(event, account=account))

    def terminate(self, reason: str) -> None:
        """End the session from the gateway's side (shutdown, revocation), telling the user why."""
        if self._client_gone:
            return
        self._send_target_output()
        self._tell_user(reason)
        if self._upstream_conn is not None:
            self._upstream_conn.close()
        self._finish("interrupted", reason=reason)
        self._exit(GATEWAY_EXIT_STATUS)

    def _event(
        self,
        action: str,
        outcome: str,
        *,
        reason: str = "",
        target: str | None = None,
        session_id: str | None = None,
        authority: str | None = None,
        **details: object,
    ) -> AuditEvent:
        return AuditEvent(
            actor=self._actor,
            actor_type=self.actor_type,
            action=action,
            outcome=outcome,
            target=target,
            session_id=session_id,
            source=self._source,
            reason=reason,
            authority=authority,
            details=details,
        )

    # -- talking to the client ------------------------------------------

    def _answer(self, status: int, output: str = "", *, note: str = "") -> None:
        """Answer from the gateway itself, with no target: ``output`` on stdout, ``note``
        on stderr (pamgate: ...), then ``status``. For self-service and credential exchanges."""
        if output and self._chan is not None:
            self._chan.write(output.encode())
        if note:
            self._tell_user(note)
        self._finished = True
        self._exit(status)

    def _tell_user(self, message: str) -> None:
        if self._dialog is not None:
            self._dialog.say(message, fresh_line=self._upstream is not None)

    # exit() is valid after our EOF (is_closing() is already True then), so
    # these check only whether the client's channel is gone.
    def _exit(self, status: int) -> None:
        if self._chan is not None and not self._client_gone:
            self._chan.exit(status)

    def _exit_with_signal(self, signal: str, core_dumped: bool, message: str, lang: str) -> None:
        if self._chan is not None and not self._client_gone:
            self._chan.exit_with_signal(signal, core_dumped, message, lang)
