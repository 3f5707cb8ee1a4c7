"""Signing a person in: the one place for the SSH lane, the console and the CLI.

Two factors every time: a password or a registered key, then a TOTP code.
Whoever asks gets the same accounting and the same audit events:
``auth.success``; ``auth.failure`` with the precise reason (and the stage an
abandoned attempt reached); ``auth.backoff`` when a failure makes a counter
of :mod:`gateway.domain.lockout` hold further attempts back. A success that
cannot be audited is a failure (fail closed).

An *attempt* is one first factor and one code. It is counted as a failure
**before** anything is checked and taken back only by a success, so an
attempt that the client abandons (disconnects at the code prompt, restarts
keyboard-interactive, lets the login timer run out) counts like a wrong one,
and a client cannot dodge the count by leaving early. The console and the
CLI make an attempt in one call (:meth:`SignIn.sign_in`); the SSH lane goes
through :class:`ConnectionSignIn`, which follows the protocol's steps and
also caps the attempts one connection may make and says how long a failed
one must take before it is answered (the failure delay, on every path).

The code is checked only after the first factor passed, so a wrong password
never burns a code. Answers are taken as they come (any Unicode, any length,
a wrong number of them): an answer that is not a well-formed password or a
six-digit code is refused like a wrong one, with its own reason in the trail.
The person is told only that the sign-in failed, never which factor.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime

from gateway.config import AuthSettings
from gateway.crypto.secret_box import SecretBoxError
from gateway.domain.audit.trail import ActorType, AuditEvent, AuditLog, Trail
from gateway.domain.identities import MAX_PASSWORD_LENGTH, TotpCheck, UserDirectory, UserView
from gateway.domain.lockout import FailureLimiter, ThrottleState, source_key
from gateway.domain.login_certificates import LOGIN_CERT_METHOD, CertificateLogin
from gateway.domain.password_checks import PasswordChecks
from gateway.errors import PamgateError, StoreError

logger = logging.getLogger("pamgate.sign_in")

PASSWORD = "password"
PUBLICKEY = "publickey"
#: A login certificate (gateway.domain.login_certificates): both factors, or the first
#: when a rule asks for a fresh code.
LOGIN_CERT = LOGIN_CERT_METHOD
#: The stages an attempt passes through, as the audit trail names them.
STAGE_PASSWORD = "password prompt"
STAGE_CODE = "verification code prompt"
#: Why an attempt ends when the client starts another one before answering.
RESTARTED = "keyboard-interactive restarted"
#: What a person is told when their code was right but already used.
CODE_REUSED = "that code was already used; wait for the next one"
#: Times one attempt may answer the code prompt again after a reused code.
MAX_CODE_RETRIES = 2
#: A source that signed someone in this recently has its password checks done first.
GOOD_SOURCE_SECONDS = 7 * 24 * 3600.0


class SignInFailed(PamgateError):
    """Wrong password or code, unknown or disabled user, or throttled (one message for all
    but the last: a back-off is said with its wait, as the SSH lane says it)."""

    def __init__(self, message: str, *, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        #: Seconds until a back-off on this user name or address ends; None if none is on.
        self.retry_after_seconds = retry_after_seconds


@dataclass(frozen=True)
class SignInResult:
    """The outcome of one sign-in attempt."""

    #: The person, when both factors passed and the success was audited.
    user: UserView | None
    #: Why it failed, for the audit trail only (never for the person).
    reason: str = ""
    #: The least time the failed attempt should take before it is answered.
    delay_seconds: float = 0.0
    #: True when a back-off is in force for this user name and address, or the address.
    blocked: bool = False
    #: Seconds until the back-off ends (when ``blocked``).
    retry_after_seconds: float = 0.0
    #: The code was right but already used: the attempt stays open for the next code.
    retry_code: bool = False


@dataclass(frozen=True)
class SignedIn:
    """How a person signed in on one SSH connection: what its sessions carry."""

    user: UserView
    #: ``password+totp``, ``publickey+totp``, ``login-cert`` or ``login-cert+totp``.
    method: str
    #: When the verification code behind this sign-in was checked (for a login certificate
    #: alone, at the sign-in that got the certificate).
    mfa_at: datetime | None
    #: The login certificate the connection signed in with, if it did.
    certificate: CertificateLogin | None = None

    @property
    def fresh_code(self) -> bool:
        """True when a code was checked on this connection (not a login certificate alone)."""
        return self.method != LOGIN_CERT

    @property
    def certificate_serial(self) -> int | None:
        return self.certificate.serial if self.certificate is not None else None


@dataclass
class SignInAttempt:
    """One first factor and one code, from one source."""

    name: str
    first_factor: str
    source: str
    purpose: str
    started: float
    throttle: ThrottleState
    details: dict[str, str] = field(default_factory=dict)
    stage: str = STAGE_PASSWORD
    #: Counted as a failure (before it was checked): a success takes it back.
    counted: bool = False
    #: The first factor's verdict: None while unknown (not answered, or still being checked).
    first_factor_ok: bool | None = None
    #: Why the first factor's answer was refused without being checked (malformed).
    malformed: str = ""
    settled: bool = False
    delay_seconds: float = 0.0
    #: Codes answered again after a reused one (at most MAX_CODE_RETRIES).
    code_retries: int = 0


class SignIn:
    """Checks a person's two factors, with throttling and audit (see the module docstring)."""

    def __init__(
        self, users: UserDirectory, limiter: FailureLimiter, audit: AuditLog,
        settings: AuthSettings, *, wall_clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self._users = users
        self._limiter = limiter
        self._audit = audit
        self._settings = settings
        self._wall_clock = wall_clock
        #: Where the SSH lane's password checks run, the most deserving first.
        self.password_checks = PasswordChecks()

    @property
    def settings(self) -> AuthSettings:
        """The ``[auth]`` settings the service applies."""
        return self._settings

    def check_key(self, name: str, key_data: str) -> bool:
        """True if ``key_data`` (``TYPE BASE64``) is registered for the enabled user ``name``.

        A lookup, not an attempt: the attempt begins when the code is asked for.
        """
        return self._users.key_is_registered(name, key_data)

    def over_connection(
        self, source: str, *, clock: Callable[[], float] = time.monotonic
    ) -> ConnectionSignIn:
        """The attempts of one SSH connection from ``source`` (see :class:`ConnectionSignIn`)."""
        return ConnectionSignIn(self, source, self._settings.max_attempts_per_connection, clock)

    # -- both factors at once: the console and the CLI -------------------------

    def sign_in(
        self, name: str, password: str, code: str, *, source: str, purpose: str
    ) -> UserView:
        """The user, if both factors are right; SignInFailed after the failure delay if not."""
        attempt = self.begin(name, PASSWORD, source, purpose=purpose, started=time.monotonic())
        self.check_password(attempt, password)
        result = self.finish(attempt, code)
        if result.user is None:
            time.sleep(result.delay_seconds)
            raise SignInFailed(
                f"authentication as {name} failed",
                retry_after_seconds=result.retry_after_seconds if result.blocked else None,
            )
        return result.user

    # -- a login certificate as both factors: the SSH lane ----------------------

    def sign_in_with_certificate(self, login: CertificateLogin, source: str) -> SignInResult:
        """Sign in with a login certificate the lane has checked and the client proved it holds.

        The certificate stands for the sign-in with both factors it was issued
        after (``mfa_at``); the user must still exist and be enabled. It is not
        a guess, so it is neither counted nor held back by a back-off at the
        address (a stolen one is revoked, not throttled). The success is
        audited with ``method=login-cert`` and when that MFA happened, or it
        is a failure.
        """
        details: dict[str, object] = {
            "serial": login.serial, "key": login.key_fingerprint,
            "mfa_at": login.mfa_at.isoformat() if login.mfa_at else None,
            "certificate_valid_before": login.valid_before.isoformat(),
        }  # fmt: skip
        account = self._users.get(login.user)
        reason = ""
        if account is None:
            reason = "unknown user"
        elif account.disabled:
            reason = "user disabled"
        if not reason:
            assert account is not None
            try:
                self._audit.record(Trail.HUMAN, AuditEvent(
                    actor=login.user, actor_type=ActorType.HUMAN, action="auth.success",
                    outcome="success", source=source,
                    details={"method": LOGIN_CERT, "factor": LOGIN_CERT, **details},
                ))  # fmt: skip
                return SignInResult(account)
            except StoreError:
                logger.exception("the sign-in of %s could not be audited", login.user)
                reason = "the login could not be audited"
        self._record(AuditEvent(
            actor=login.user[:64], actor_type=ActorType.HUMAN, action="auth.failure",
            outcome="failure", source=source, reason=reason,
            details={"factor": LOGIN_CERT, **details},
        ))  # fmt: skip
        return SignInResult(None, reason)

    # -- the steps of an attempt (ConnectionSignIn and sign_in) ----------------

    def begin(
        self, name: str, first_factor: str, source: str, *, purpose: str = "ssh",
        started: float, details: dict[str, str] | None = None,
    ) -> SignInAttempt:  # fmt: skip
        """Start an attempt: read the throttle; a key's attempt is counted at once (its code
        is the guess), a password's when the password arrives."""
        attempt = SignInAttempt(
            name, first_factor, source, purpose, started, self._limiter.state(name, source),
            dict(details or {}),
        )  # fmt: skip
        if first_factor in (PUBLICKEY, LOGIN_CERT):
            attempt.stage = STAGE_CODE
            attempt.first_factor_ok = True
            self.count(attempt)
        return attempt

    def count(self, attempt: SignInAttempt) -> None:
        """Count ``attempt`` as a failure now (once); a success takes it back."""
        if attempt.counted:
            return
        attempt.counted = True
        if attempt.throttle.blocked:
            # Nothing is checked while blocked, so nothing is counted: the wait stays as it is.
            attempt.delay_seconds = attempt.throttle.delay_seconds
            return
        outcome = self._limiter.record_failure(attempt.name, attempt.source)
        attempt.delay_seconds = outcome.delay_seconds
        for scope in outcome.backoffs:
            reason = f"too many failures ({scope})"
            self._record(self._event(attempt, "auth.backoff", "failure", reason=reason,
                                     scope=scope))  # fmt: skip

    def check_password(self, attempt: SignInAttempt, password: str | None) -> None:
        """Count the attempt, then verify ``password`` (one argon2 check, unless blocked or
        malformed). ``None`` is an answer that was not one string."""
        self.count(attempt)
        attempt.stage = STAGE_CODE
        if attempt.throttle.blocked:
            attempt.first_factor_ok = False
            return
        if password is None:
            attempt.malformed = "the answer to the password prompt was not one string"
        elif len(password) > MAX_PASSWORD_LENGTH:
            # No password is this long (identities refuses to set one): nothing to check.
            attempt.malformed = f"a password of {len(password)} characters"
        if attempt.malformed:
            attempt.first_factor_ok = False
            return
        assert password is not None
        attempt.first_factor_ok = self._users.verify_password(attempt.name, password)

    def finish(
        self, attempt: SignInAttempt, code: str | None, *, allow_code_retry: bool = False
    ) -> SignInResult:
        """Check ``code`` after the first factor and settle the attempt.

        The caller applies :attr:`SignInResult.delay_seconds` (from the
        attempt's start) before answering a failure. With ``allow_code_retry``
        (a caller that can prompt again), a right code that was already used
        leaves the attempt open (:attr:`SignInResult.retry_code`), at most
        :data:`MAX_CODE_RETRIES` times.
        """
        self.count(attempt)
        attempt.settled = True
        if attempt.throttle.blocked:
            state = attempt.throttle
            reason = f"throttled ({state.scope}): retry in {state.retry_after_seconds:.0f} s"
            return self._fail(attempt, attempt.first_factor, reason)
        account = self._users.get(attempt.name)
        if account is None:
            return self._fail(attempt, attempt.first_factor, "unknown user")
        if account.disabled:
            return self._fail(attempt, attempt.first_factor, "user disabled")
        if not attempt.first_factor_ok:
            reason = attempt.malformed or f"wrong {attempt.first_factor}"
            return self._fail(attempt, attempt.first_factor, reason)
        problem = code_problem(code)
        if problem:
            return self._fail(attempt, "totp", problem)
        assert code is not None
        try:
            verdict = self._users.check_totp(attempt.name, code)
        except SecretBoxError as exc:  # no key, a wrong key, or an altered secret: fail closed
            logger.error("cannot check the code of %s: %s", attempt.name, exc)
            return self._fail(attempt, "totp", f"the code could not be checked: {exc}")
        retry = allow_code_retry and attempt.code_retries < MAX_CODE_RETRIES
        if verdict == TotpCheck.REUSED and retry:
            # The person knows the first factor and had a right code, used a moment ago (a
            # second login within 30 s): they may wait for the next one in the same attempt.
            attempt.code_retries += 1
            attempt.settled = False
            self._record(self._event(
                attempt, "auth.code_reused", "refused", reason=CODE_REUSED, factor="totp",
            ))  # fmt: skip
            return SignInResult(None, CODE_REUSED, retry_code=True)
        if verdict != TotpCheck.ACCEPTED:
            return self._fail(attempt, "totp", "wrong or reused verification code")
        return self._succeed(attempt, account)

    def abandon(self, attempt: SignInAttempt, why: str) -> SignInResult:
        """Settle an attempt the client left unfinished (restart, disconnect, timeout)."""
        self.count(attempt)
        attempt.settled = True
        reason = f"abandoned at the {attempt.stage} ({why})"
        return self._fail(attempt, attempt.first_factor, reason, stage=attempt.stage)

    def refuse_connection(
        self, name: str, source: str, reason: str, *, count: bool, **details: str
    ) -> None:
        """Audit a connection that ended without any attempt (``count``: as one failure), or
        one refused another attempt (nothing was checked: not counted)."""
        attempt = self.begin(name, PASSWORD, source, started=0.0, details=details)
        if count:
            self.count(attempt)
        attempt.settled = True
        self._fail(attempt, "none", reason)

    # -- internals -----------------------------------------------------------

    def _succeed(self, attempt: SignInAttempt, account: UserView) -> SignInResult:
        event = self._event(
            attempt, "auth.success", "success", method=f"{attempt.first_factor}+totp",
            factor="totp",
        )  # fmt: skip
        try:
            self._audit.record(Trail.HUMAN, event)
        except StoreError:
            logger.exception("the sign-in of %s could not be audited", attempt.name)
            return self._fail(attempt, "totp", "the login could not be audited")
        self._limiter.record_success(attempt.name, attempt.source)
        self.password_checks.signed_in_from(self.source_key(attempt.source), self._wall_clock())
        return SignInResult(account)

    def source_key(self, source: str) -> str:
        """The counter key of ``source`` (an address, or its IPv6 network)."""
        return source_key(source, self._settings.source_ipv6_prefix)

    def check_priority(self, attempt: SignInAttempt) -> tuple[float, ...]:
        """Where ``attempt``'s password check goes in :attr:`password_checks`' queue."""
        return self.password_checks.priority(
            self.source_key(attempt.source), attempt.throttle.source_failures,
            since=self._wall_clock() - GOOD_SOURCE_SECONDS,
        )  # fmt: skip

    def _fail(self, attempt: SignInAttempt, factor: str, reason: str, **extra: str) -> SignInResult:
        self._record(self._event(attempt, "auth.failure", "failure", reason=reason,
                                 factor=factor, **extra))  # fmt: skip
        state = attempt.throttle
        if not state.blocked:
            # This failure may have started a back-off: tell the client when to come back.
            state = self._limiter.state(attempt.name, attempt.source)
        return SignInResult(
            None, reason, attempt.delay_seconds, state.blocked, state.retry_after_seconds
        )

    def _record(self, event: AuditEvent) -> None:
        # Refusing either way: a failed write of a failure is logged, not raised.
        try:
            self._audit.record(Trail.HUMAN, event)
        except StoreError:
            logger.exception("audit write failed for %s", event.action)

    @staticmethod
    def _event(
        attempt: SignInAttempt, action: str, outcome: str, *, reason: str = "", **details: object
    ) -> AuditEvent:
        extra: dict[str, object] = {"purpose": attempt.purpose} if attempt.purpose != "ssh" else {}
        return AuditEvent(
            actor=attempt.name[:64], actor_type=ActorType.HUMAN, action=action, outcome=outcome,
            source=attempt.source, reason=reason,
            details={**extra, **attempt.details, **details},
        )  # fmt: skip


def code_problem(code: str | None) -> str:
    """Why ``code`` cannot be a verification code ("" if it can be checked).

    Only the ASCII digits 0-9 make a code: ``str.isdigit`` also accepts
    Arabic-Indic, superscript and other digits, which the TOTP comparison
    cannot take.
    """
    if code is None:
        return "malformed verification code (not one answer)"
    cleaned = code.strip().replace(" ", "")
    if len(cleaned) != 6 or not all("0" <= c <= "9" for c in cleaned):
        return f"malformed verification code ({len(code)} characters, not 6 ASCII digits)"
    return ""


def split_password_and_code(answer: str | None) -> tuple[str, str] | None:
    """``PASSWORD123456`` as (``PASSWORD``, ``123456``): a password with the current code
    appended, for tools that answer one prompt only (sshpass, ``plink -pw``); None when the
    answer does not end in six ASCII digits after at least one other character.

    Only for people a rule or ``[auth] password_with_code_groups`` opts in: for them an
    answer ending in six digits is always read this way (one argon2 check per attempt,
    never two readings of one answer).
    """
    if answer is None or len(answer) < 7:
        return None
    code = answer[-6:]
    if not all("0" <= c <= "9" for c in code):
        return None
    return answer[:-6], code


class ConnectionSignIn:
    """The sign-in attempts over one SSH connection, step by step as the protocol asks.

    The lane calls :meth:`begin` when it puts up a prompt, :meth:`answer_password`
    and :meth:`answer_code` with the client's answers, and :meth:`closed`
    when the connection ends; it waits :meth:`wait_seconds` before sending
    any prompt or failure. A client may restart keyboard-interactive or send
    answers out of turn at any moment (asyncssh then cancels the lane's
    callback mid-way), so every method settles what the previous step left
    open, and each is safe to call from worker threads in any order.
    """

    def __init__(
        self, service: SignIn, source: str, max_attempts: int, clock: Callable[[], float]
    ) -> None:
        self._service = service
        self._source = source
        self._max_attempts = max_attempts
        self._clock = clock
        self._lock = threading.Lock()
        self._attempt: SignInAttempt | None = None
        self._attempts = 0
        self._not_before = 0.0
        self._succeeded = False

    @property
    def attempts_left(self) -> int:
        """Attempts this connection may still begin."""
        return max(self._max_attempts - self._attempts, 0)

    @property
    def expecting(self) -> str:
        """``password`` or ``code``: what the open attempt's next answer is ("" if none)."""
        attempt = self._attempt
        if attempt is None or attempt.settled:
            return ""
        return "password" if attempt.stage == STAGE_PASSWORD else "code"

    def wait_seconds(self) -> float:
        """How long the lane must wait before its next prompt or failure goes out."""
        return max(self._not_before - self._clock(), 0.0)

    def settle_open(self, why: str) -> None:
        """Settle an attempt the client left open (it restarted keyboard-interactive) as
        abandoned; the lane then waits :meth:`wait_seconds` before its next prompt."""
        with self._lock:
            self._abandon_open(why)

    def begin(self, name: str, first_factor: str, details: dict[str, str] | None = None) -> bool:
        """A new attempt starts (the lane is about to show its first prompt).

        An open attempt is settled as abandoned first: the client restarted.
        False when this connection has used its attempts: the lane disconnects.
        """
        with self._lock:
            self._abandon_open(RESTARTED)
            if self._attempts >= self._max_attempts:
                self._service.refuse_connection(
                    name, self._source,
                    f"too many attempts on one connection ({self._max_attempts})", count=False,
                )  # fmt: skip
                return False
            self._attempts += 1
            self._attempt = self._service.begin(
                name, first_factor, self._source, started=self._clock(), details=details
            )
            return True

    def answer_password(self, answer: str | None) -> Future[None]:
        """The client answered the password prompt (``None``: not with one string).

        The attempt is counted now; the check is queued on the service's
        :class:`PasswordChecks` and done when the returned future is. A check
        still queued when the client moves on (cancelling the future) is
        dropped: the attempt stays counted, and is settled as abandoned.
        """
        with self._lock:
            attempt = self._attempt
            if attempt is None or attempt.settled or attempt.stage != STAGE_PASSWORD:
                done: Future[None] = Future()  # out of turn: a code prompt is (or was) up
                done.set_result(None)
                return done
            # Counted and moved on before the (slow) check, which runs unlocked.
            self._service.count(attempt)
            attempt.stage = STAGE_CODE
        return self._service.password_checks.submit(
            self._service.check_priority(attempt),
            lambda: self._service.check_password(attempt, answer),
        )

    def answer_code(self, answer: str | None, *, one_prompt: bool = False) -> SignInResult:
        """The client answered the code prompt (``one_prompt``: the code came appended to the
        password, see :func:`split_password_and_code`): settle the attempt."""
        with self._lock:
            attempt = self._attempt
            if attempt is None or attempt.settled:
                return SignInResult(None, "no attempt open", self.wait_seconds())
            if one_prompt:
                attempt.details["answer"] = "password and code in one prompt"
            if attempt.first_factor_ok is None:
                # Answered before the password's check finished (out of turn): fail closed.
                attempt.first_factor_ok = False
                attempt.malformed = "the code was sent before the password was checked"
            result = self._service.finish(attempt, answer, allow_code_retry=True)
            self._succeeded = result.user is not None
            if not self._succeeded and not result.retry_code:
                self._not_before = attempt.started + result.delay_seconds
            return result

    def closed(self, why: str, *, began_auth: bool, name: str, reached: str) -> None:
        """The connection ended (``why``): settle an open attempt as abandoned; a connection
        that asked to sign in but never made an attempt is counted and audited once.

        ``reached`` says how far such a connection got (``publickey offered``...).
        """
        with self._lock:
            if self._succeeded:
                return
            if self._abandon_open(why):
                return
            if began_auth and self._attempts == 0:
                self._service.refuse_connection(
                    name, self._source, f"disconnected before any attempt ({why})",
                    count=True, stage=reached,
                )  # fmt: skip

    def _abandon_open(self, why: str) -> bool:
        attempt = self._attempt
        if attempt is None or attempt.settled:
            return False
        result = self._service.abandon(attempt, why)
        self._not_before = attempt.started + result.delay_seconds
        return True
