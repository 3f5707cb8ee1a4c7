"""Credential exchanges on the machine lane: answered by the gateway, never relayed.

``pamgate-join`` (:class:`JoinExchange`): a workload that logged in with a
plain key sends a join token on stdin and gets, on stdout, a certificate for
the key it proved. Failed joins count towards a per-source lockout of their
own.

``pamgate-renew`` (:class:`RenewExchange`): an NHI logged in with its
certificate sends a *new* public key on stdin and gets the next generation's
certificate for it on stdout.
"""

from __future__ import annotations

import asyncio
import math

from gateway.config import parse_duration
from gateway.domain.audit.trail import ActorType, AuditEvent
from gateway.domain.machines.admission import MachineLogin
from gateway.domain.machines.credentials import JoinRefused
from gateway.errors import PamgateError
from gateway.ssh.channel import SessionChannel
from gateway.ssh.relay import SessionHost

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


def _refused(
    actor: str,
    source: str,
    action: str,
    reason: str,
    authority: str | None = None,
    **details: object,
) -> AuditEvent:
    return AuditEvent(
        actor=actor, actor_type=ActorType.MACHINE, action=action, outcome="refused",
        source=source, reason=reason, authority=authority, details=details,
    )  # fmt: skip


class JoinExchange:
    """The ``pamgate-join`` login's one session: a join token for a certificate on the key."""

    def __init__(self, host: SessionHost, key_line: str, source: str) -> None:
        self._host = host
        self._key_line = key_line
        self._source = source

    def subsystem_requested(self, subsystem: str) -> bool:
        return False

    def channel_closed(self) -> None:
        pass  # nothing was set up; a half-read token is simply dropped

    def terminate(self, reason: str) -> None:
        pass  # an exchange lasts seconds; the lane's stop waits for it

    async def run(self, channel: SessionChannel) -> None:
        services = self._host.services
        # Failed joins are counted per source, apart from the human lane's
        # counters: a noisy CI runner must not lock admins at the same address out.
        limiter_user, limiter_source = f"{JOIN_USER}@{self._source}", f"join:{self._source}"
        try:
            lock = await services.executors.run_db(
                services.limiter.state, limiter_user, limiter_source
            )
            if lock.blocked:
                raise JoinRefused(
                    "too many failed joins from this address; "
                    f"try again in {math.ceil(lock.retry_after_seconds)} s"
                )
            ttl = exchange_ttl(channel.request.command or JOIN_USER, JOIN_USER)
            data = await channel.read_input(MAX_EXCHANGE_INPUT, EXCHANGE_INPUT_TIMEOUT)
            if data is None:
                raise JoinRefused("send the join token on stdin (one line, then EOF)")
        except PamgateError as exc:
            await self._host.record(
                _refused(JOIN_USER, self._source, "machine.join_refused", str(exc))
            )
            channel.answer(EXCHANGE_REFUSED_STATUS, note=str(exc))
            return
        try:
            nhi, signed = await services.executors.run_db(
                services.machine_credentials.join, first_line(data), self._key_line,
                ttl_seconds=ttl, source=self._source,
            )  # fmt: skip
        except PamgateError as exc:  # audited by join()
            outcome = await services.executors.run_db(
                services.limiter.record_failure, limiter_user, limiter_source
            )
            await asyncio.sleep(outcome.delay_seconds)
            channel.answer(EXCHANGE_REFUSED_STATUS, note=str(exc))
            return
        channel.answer(0, signed.certificate + "\n", note=(
            f"joined as {nhi.name}: certificate serial {signed.serial}, "
            f"valid for {signed.ttl_seconds // 60} min"
        ))  # fmt: skip


class RenewExchange:
    """``pamgate-renew``: the next generation's certificate for a new public key."""

    def __init__(self, host: SessionHost, login: MachineLogin, source: str) -> None:
        self._host = host
        self._login = login
        self._source = source

    async def run(self, channel: SessionChannel, authority: str) -> None:
        services, login = self._host.services, self._login
        try:
            ttl = exchange_ttl(channel.request.command or "", RENEW_COMMAND)
            data = await channel.read_input(MAX_EXCHANGE_INPUT, EXCHANGE_INPUT_TIMEOUT)
            if data is None:
                raise ExchangeUsageError("send the new public key on stdin (one line, then EOF)")
            signed = await services.executors.run_db(
                services.machine_credentials.renew, login.nhi.name, login.certificate,
                first_line(data), ttl_seconds=ttl, source=self._source,
            )  # fmt: skip
        except PamgateError as exc:
            await self._host.record(_refused(
                login.nhi.name, self._source, "machine.renew_refused", str(exc), authority,
                serial=login.certificate.serial,
            ))  # fmt: skip
            channel.answer(EXCHANGE_REFUSED_STATUS, note=str(exc))
            return
        channel.answer(0, signed.certificate + "\n", note=(
            f"renewed {login.nhi.name}: certificate serial {signed.serial}, valid for "
            f"{signed.ttl_seconds // 60} min; the old certificate must not be used again"
        ))  # fmt: skip
