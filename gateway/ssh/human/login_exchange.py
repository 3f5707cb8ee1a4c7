"""``pamgate-login`` and ``pamgate-logout``: login certificates, asked for over SSH.

``ssh -p PORT alice@gw pamgate-login [--ttl DURATION] [--bind-source] < KEY.pub > KEY-cert.pub``
signs the public key on stdin with the login CA for alice
(:meth:`gateway.domain.login_certificates.LoginCertificates.issue`); the
certificate goes to stdout and a one-line summary to stderr. Only a
connection that checked a verification code may ask: a login certificate
alone never buys the next one, so a stolen certificate dies when it expires.

``ssh -p PORT alice@gw pamgate-logout`` revokes all of alice's login
certificates; live sessions signed in with one end within about 2 s.

Both are answered by the gateway itself, only when the login names no
target, and never reach a target. Refusals are audited
(``login_cert.refused``) with their reason.
"""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.config import parse_duration
from gateway.domain.audit.trail import ActorType, AuditEvent
from gateway.domain.sign_in import SignedIn
from gateway.errors import PamgateError
from gateway.ssh.channel import SessionChannel
from gateway.ssh.machine.exchanges import (
    EXCHANGE_INPUT_TIMEOUT,
    EXCHANGE_REFUSED_STATUS,
    MAX_EXCHANGE_INPUT,
    first_line,
)
from gateway.ssh.relay import SessionHost

LOGIN_COMMAND = "pamgate-login"
LOGOUT_COMMAND = "pamgate-logout"
LOGIN_USAGE = f"usage: {LOGIN_COMMAND} [--ttl DURATION] [--bind-source] < KEY.pub > KEY-cert.pub"
#: The authority of what a person does to their own login certificates.
SELF_SERVICE = "self-service"


class LoginUsageError(PamgateError):
    """``pamgate-login`` or ``pamgate-logout`` was called the wrong way."""


def is_login_command(command: str | None, *, has_target: bool) -> bool:
    """True if an exec ``command`` is ``pamgate-login`` or ``pamgate-logout`` (no target)."""
    if not command or has_target:
        return False
    return command.split(maxsplit=1)[0] in (LOGIN_COMMAND, LOGOUT_COMMAND)


LOGIN_HELP = f"""{LOGIN_USAGE}

Sign a public key (on stdin) with pamgate's login CA for you; the certificate goes to
stdout. Until it expires or is revoked, ssh, scp, sftp and rsync sign in with it and the
key, with no password or code (ssh loads KEY-cert.pub next to KEY by itself). Run it once
a day, signed in with your password (or registered key) and code.

  --ttl DURATION   lifetime such as 2h or 90m (default and maximum: the gateway's
                   [auth] login_certificate_ttl and login_certificate_max_ttl)
  --bind-source    the certificate works only from the address you asked from

'{LOGOUT_COMMAND}' revokes all your login certificates.
"""


def parse_login_command(command: str) -> tuple[int | None, bool]:
    """The ``--ttl`` (seconds, None if not given) and ``--bind-source`` of a login command."""
    words = command.split()[1:]
    ttl: int | None = None
    bind = False
    while words:
        word = words.pop(0)
        if word == "--bind-source" and not bind:
            bind = True
        elif word == "--ttl" and words and ttl is None:
            ttl = parse_duration(words.pop(0), "--ttl")
        else:
            raise LoginUsageError(LOGIN_USAGE)
    return ttl, bind


class LoginExchange:
    """One ``pamgate-login`` or ``pamgate-logout`` on a session channel."""

    def __init__(self, host: SessionHost, signed_in: SignedIn, source: str) -> None:
        self._host = host
        self._signed_in = signed_in
        self._source = source

    async def run(self, channel: SessionChannel) -> None:
        command = channel.request.command or ""
        if command.split()[0] == LOGOUT_COMMAND:
            await self._log_out(channel, command)
        else:
            await self._log_in(channel, command)

    async def _log_in(self, channel: SessionChannel, command: str) -> None:
        services, signed_in = self._host.services, self._signed_in
        user = signed_in.user.name
        if command.split()[1:] in (["--help"], ["-h"]):
            channel.answer(0, LOGIN_HELP)
            return
        try:
            ttl, bind = parse_login_command(command)
            if not signed_in.fresh_code or signed_in.mfa_at is None:
                raise LoginUsageError(
                    f"{LOGIN_COMMAND} needs a sign-in with your verification code, not a login "
                    f"certificate alone: run it with ssh -o PubkeyAuthentication=no (or once "
                    "the certificate has expired)"
                )
            data = await channel.read_input(MAX_EXCHANGE_INPUT, EXCHANGE_INPUT_TIMEOUT)
            if data is None:
                raise LoginUsageError(
                    f"send your public key on stdin (one line, then EOF). {LOGIN_USAGE}"
                )
            line = first_line(data)
            if not line:
                raise LoginUsageError(f"no public key on stdin. {LOGIN_USAGE}")
            signed = await services.executors.run_db(
                services.login_certificates.issue, user, line, ttl_seconds=ttl,
                source=self._source, bind_source=bind, mfa_at=signed_in.mfa_at,
                method=signed_in.method,
            )  # fmt: skip
        except PamgateError as exc:
            await self._host.record(AuditEvent(
                actor=user, actor_type=ActorType.HUMAN, action="login_cert.refused",
                outcome="refused", source=self._source, reason=str(exc),
            ))  # fmt: skip
            channel.answer(EXCHANGE_REFUSED_STATUS, note=str(exc))
            return
        bound = f", only from {signed.source_address}" if signed.source_address else ""
        until = signed.valid_before.astimezone(UTC)
        channel.answer(0, signed.certificate + "\n", note=(
            f"login certificate serial {signed.serial} for {user}, valid until "
            f"{until:%Y-%m-%d %H:%M} UTC{bound}; '{LOGOUT_COMMAND}' revokes it"
        ))  # fmt: skip

    async def _log_out(self, channel: SessionChannel, command: str) -> None:
        services, user = self._host.services, self._signed_in.user.name
        if command.split() != [LOGOUT_COMMAND]:
            channel.answer(EXCHANGE_REFUSED_STATUS, note=f"usage: {LOGOUT_COMMAND}")
            return
        try:
            serials = await services.executors.run_db(
                services.login_certificates.log_out, user, actor=user,
                actor_type=ActorType.HUMAN, authority=SELF_SERVICE, source=self._source,
            )  # fmt: skip
        except PamgateError as exc:
            channel.answer(EXCHANGE_REFUSED_STATUS, note=f"logout failed: {exc}")
            return
        now = datetime.now(UTC)
        channel.answer(0, note=(
            f"logged out at {now:%H:%M:%S} UTC: {len(serials)} login certificate(s) revoked"
        ))  # fmt: skip
