"""Sessions on the machine lane: a scoped command relayed to a target, or a credential exchange.

:class:`MachineSession` belongs to an NHI that logged in with a certificate.
It runs ``pamgate-renew`` itself (new public key on stdin, the next
generation's certificate on stdout). Anything else is held to the NHI's
scope by :class:`~gateway.domain.machines.admission.MachineGate` (target account,
command, force-command, no pty unless allowed), audited as
``command.allowed`` or ``command.refused``, and relayed like a human
session, with a fresh upstream certificate and a recording of the exec. The
session ends within about 2 s of the NHI being suspended or offboarded, or
its certificate being revoked.

:class:`MachineJoinSession` is the ``pamgate-join`` login: a join token on
stdin buys a certificate, on stdout, for the key the workload authenticated
with. Failed joins count towards the per-source lockout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math

from gateway.config import parse_duration
from gateway.domain.access import Destination
from gateway.domain.audit.trail import ActorType
from gateway.domain.machines.admission import MachineLogin, ScopeRefused
from gateway.domain.machines.credentials import JoinRefused
from gateway.domain.transfer.policy import TransferMode, TransferPolicy
from gateway.errors import PamgateError
from gateway.ssh.relay import RelayedSession, SessionHost
from gateway.ssh.transfer.filter import FileTransferSession
from gateway.ssh.watch import LiveChecks, WatchSubject

JOIN_USER = "pamgate-join"
RENEW_COMMAND = "pamgate-renew"
#: Most stdin a credential exchange reads (a public key line, or a token).
MAX_EXCHANGE_INPUT = 16 * 1024
#: Seconds a credential exchange waits for its stdin to end.
EXCHANGE_INPUT_TIMEOUT = 30.0
#: Exit status of a refused credential exchange.
EXCHANGE_REFUSED_STATUS = 1


class ExchangeUsageError(PamgateError):
    """A credential exchange (join, renew) was called the wrong way."""


def exchange_ttl(command: str, name: str) -> int | None:
    """The ``--ttl`` of ``NAME [--ttl DURATION]``; None when not given."""
    words = command.split()
    if words == [name]:
        return None
    if len(words) == 3 and words[0] == name and words[1] == "--ttl":
        return parse_duration(words[2], "--ttl")
    raise ExchangeUsageError(f"usage: {name} [--ttl DURATION] (input on stdin)")


def first_line(data: bytes) -> str:
    """The first non-empty line of a credential exchange's input."""
    for line in data.decode("utf-8", "replace").splitlines():
        if line.strip():
            return line.strip()
    return ""


class MachineSession(FileTransferSession):
    """A session of an NHI authenticated by certificate."""

    lane = "machine"
    actor_type = ActorType.MACHINE

    def __init__(
        self,
        login: MachineLogin,
        login_name: str,
        source: str,
        host: SessionHost,
        login_recorded: asyncio.Future[bool],
    ) -> None:
        super().__init__(host, actor=login.nhi.name, login_name=login_name, source=source)
        self._login = login
        self._login_recorded = login_recorded

    @property
    def _authority(self) -> str:
        return f"{self._login.nhi.scope_id};serial={self._login.certificate.serial}"

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem == "sftp" and self._login.nhi.allow_sftp:
            self._subsystem = subsystem
            return True
        self._host.record_soon(self._event(
            "channel.refused", "refused", authority=self._authority, kind="subsystem",
            subsystem=subsystem[:64],
            reason=f"subsystem {subsystem[:64]!r} is not in {self._login.nhi.name}'s scope",
        ))  # fmt: skip
        return False

    async def _admit(self) -> Destination | None:
        if not await self._login_recorded:
            raise PamgateError("the login could not be audited, so it is refused")
        # Each session is a new decision: the connection may outlive a revocation.
        refused = await asyncio.to_thread(
            self._services.machine_gate.new_session_refused_because, self._login
        )
        if refused:
            raise PamgateError(refused)
        if self._command is not None and self._command.split()[:1] == [RENEW_COMMAND]:
            await self._renew(self._command)
            return None
        services, login = self._services, self._login
        target, account = services.machine_gate.destination(
            login, self._login_name, services.config
        )
        if self._subsystem is None:
            self._command = services.machine_gate.command(
                login, self._command, pty=self._term_type is not None
            )
        elif login.certificate.force_command is not None:
            raise ScopeRefused(
                f"this certificate may only run: {login.certificate.force_command[:200]}"
            )
        else:
            services.machine_gate.check_pty(login, self._term_type is not None)
        event = self._event(
            "command.allowed", "success", target=target.name, authority=self._authority,
            command=self._command if self._subsystem is None else f"subsystem:{self._subsystem}",
            serial=login.certificate.serial,
        )  # fmt: skip
        if not await self._host.record(dataclasses.replace(event, account=account)):
            raise PamgateError("the command could not be audited, so it is refused")
        # The scope's command list already decided what may run; the transfer policy
        # adds the per-file audit and the scope's directories.
        nhi = login.nhi
        policy = TransferPolicy(TransferMode.ALLOW, nhi.scope_id, paths=nhi.sftp_paths)
        await self._apply_transfer_policy(policy, self._authority, target.name, account)
        return Destination(target, account, self._authority)

    async def _record_refusal(self, reason: str) -> None:
        event = self._event(
            "command.refused", "refused", reason=reason, authority=self._authority,
            command=(self._command or "")[:500], login=self._login_name[:200],
            pty=self._term_type is not None,
        )  # fmt: skip
        await self._host.record(event)

    @property
    def watch_subject(self) -> WatchSubject:
        return WatchSubject(session_id=self._session_id, nhi=self._login.nhi.name)

    def _revoked_because(self, checks: LiveChecks) -> str | None:
        status = checks.nhi_status.get(self._login.nhi.name, "removed")
        return self._services.machine_gate.revoked_because(self._login, status=status)

    async def _renew(self, command: str) -> None:
        """Sign the next generation for the new public key on stdin."""
        services, login = self._services, self._login
        try:
            ttl = exchange_ttl(command, RENEW_COMMAND)
            data = await self.read_input(MAX_EXCHANGE_INPUT, EXCHANGE_INPUT_TIMEOUT)
            if data is None:
                raise ExchangeUsageError("send the new public key on stdin (one line, then EOF)")
            signed = await asyncio.to_thread(
                services.machine_credentials.renew, login.nhi.name, login.certificate,
                first_line(data), ttl_seconds=ttl, source=self._source,
            )  # fmt: skip
        except PamgateError as exc:
            await self._host.record(self._event(
                "machine.renew_refused", "refused", reason=str(exc), authority=self._authority,
                serial=login.certificate.serial,
            ))  # fmt: skip
            self._answer(EXCHANGE_REFUSED_STATUS, note=str(exc))
            return
        self._answer(0, signed.certificate + "\n", note=(
            f"renewed {login.nhi.name}: certificate serial {signed.serial}, valid for "
            f"{signed.ttl_seconds // 60} min; the old certificate must not be used again"
        ))  # fmt: skip


class MachineJoinSession(RelayedSession):
    """The ``pamgate-join`` exchange: a join token for a certificate on the proven key."""

    lane = "machine"
    actor_type = ActorType.MACHINE

    def __init__(self, key_line: str, source: str, host: SessionHost) -> None:
        super().__init__(host, actor=JOIN_USER, login_name=JOIN_USER, source=source)
        self._key_line = key_line

    def subsystem_requested(self, subsystem: str) -> bool:
        return False

    async def _admit(self) -> Destination | None:
        services = self._services
        # Failed joins are counted per source, apart from the human lane's
        # counters: a noisy CI runner must not lock admins at the same address out.
        limiter_user, limiter_source = f"{JOIN_USER}@{self._source}", f"join:{self._source}"
        try:
            lock = await asyncio.to_thread(services.limiter.state, limiter_user, limiter_source)
            if lock.locked:
                raise JoinRefused(
                    "too many failed joins from this address; "
                    f"try again in {math.ceil(lock.retry_after_seconds)} s"
                )
            ttl = exchange_ttl(self._command or JOIN_USER, JOIN_USER)
            data = await self.read_input(MAX_EXCHANGE_INPUT, EXCHANGE_INPUT_TIMEOUT)
            if data is None:
                raise JoinRefused("send the join token on stdin (one line, then EOF)")
        except PamgateError as exc:
            await self._host.record(self._event("machine.join_refused", "refused", reason=str(exc)))
            self._answer(EXCHANGE_REFUSED_STATUS, note=str(exc))
            return None
        try:
            nhi, signed = await asyncio.to_thread(
                services.machine_credentials.join, first_line(data), self._key_line,
                ttl_seconds=ttl, source=self._source,
            )  # fmt: skip
        except PamgateError as exc:  # audited by join()
            outcome = await asyncio.to_thread(
                services.limiter.record_failure, limiter_user, limiter_source
            )
            await asyncio.sleep(outcome.delay_seconds)
            self._answer(EXCHANGE_REFUSED_STATUS, note=str(exc))
            return None
        self._answer(0, signed.certificate + "\n", note=(
            f"joined as {nhi.name}: certificate serial {signed.serial}, "
            f"valid for {signed.ttl_seconds // 60} min"
        ))  # fmt: skip
        return None
