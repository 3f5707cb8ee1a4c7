"""The one sign-in service: the console/CLI path and the SSH lane's path keep the same books.

The SSH lane's hostile-client cases (restarts, Unicode digits, abandoned
prompts) run against the real gateway in tests/e2e/test_login_abuse.py;
here the same accounting is driven step by step without a socket.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyotp
import pytest

from gateway.config import AuthSettings
from gateway.domain.audit.trail import AuditEvent, AuditLog, Trail
from gateway.domain.identities import UserDirectory
from gateway.domain.lockout import FailureLimiter
from gateway.domain.login_certificates import CertificateLogin
from gateway.domain.sign_in import SignIn, SignInFailed, code_problem, split_password_and_code
from gateway.errors import StoreError
from gateway.store.database import Store
from tests.support.clock import Clock
from tests.support.secrets import test_secret_box

PASSWORD = "a long password"
SETTINGS = AuthSettings(
    user_source_failures=3, source_failures=50, backoff_seconds=60, failure_delay_seconds=0,
    max_attempts_per_connection=3,
)  # fmt: skip


@pytest.fixture()
def sign_in(store: Store) -> tuple[SignIn, UserDirectory, AuditLog, Clock, str]:
    clock = Clock()
    audit = AuditLog(store, clock=clock)
    users = UserDirectory(store, audit, secret_box=test_secret_box(), clock=clock)
    secret = users.add_user("bob", actor="tests", groups=["leads"], password=PASSWORD).secret
    limiter = FailureLimiter(store, audit, SETTINGS, clock=clock)
    return SignIn(users, limiter, audit, SETTINGS), users, audit, clock, secret


def auth_events(audit: AuditLog) -> list[tuple[str, str, dict[str, object]]]:
    return [
        (r.action, r.reason, json.loads(r.details))
        for r in audit.events(Trail.HUMAN)
        if r.action.startswith("auth.")
    ]


def code(secret: str, clock: Clock) -> str:
    return pyotp.TOTP(secret).at(clock.now)


def test_console_backoff_lands_in_the_trail_as_the_ssh_one_does(sign_in) -> None:
    service, _, audit, clock, secret = sign_in
    for _ in range(3):
        with pytest.raises(SignInFailed):
            service.sign_in("bob", "wrong", code(secret, clock), source="console:host",
                            purpose="console")  # fmt: skip
    console = auth_events(audit)
    assert [(action, reason) for action, reason, _ in console] == [
        ("auth.failure", "wrong password"),
        ("auth.failure", "wrong password"),
        ("auth.backoff", "too many failures (pair)"),
        ("auth.failure", "wrong password"),
    ]
    assert all(details["purpose"] == "console" for _, _, details in console)
    # Held back now: the right password and code are refused too, and say why in the trail.
    with pytest.raises(SignInFailed):
        service.sign_in("bob", PASSWORD, code(secret, clock), source="console:host",
                        purpose="console")  # fmt: skip
    assert auth_events(audit)[-1][1].startswith("throttled (pair): retry in 60 s")
    # From elsewhere bob still signs in.
    service.sign_in("bob", PASSWORD, code(secret, clock), source="console:other",
                    purpose="console")  # fmt: skip


def test_ssh_path_keeps_the_same_books(sign_in) -> None:
    service, _, audit, clock, secret = sign_in
    attempts = service.over_connection("10.0.0.1", clock=clock)
    for _ in range(3):
        assert attempts.begin("bob", "password")
        assert attempts.expecting == "password"
        attempts.answer_password("wrong").result()
        assert attempts.expecting == "code"
        result = attempts.answer_code(code(secret, clock))
        assert result.user is None
    assert result.blocked and attempts.attempts_left == 0
    assert [(action, reason) for action, reason, _ in auth_events(audit)] == [
        ("auth.failure", "wrong password"),
        ("auth.failure", "wrong password"),
        ("auth.backoff", "too many failures (pair)"),
        ("auth.failure", "wrong password"),
    ]
    # A fourth attempt on the connection is refused before anything is checked.
    assert not attempts.begin("bob", "password")
    assert auth_events(audit)[-1][1] == "too many attempts on one connection (3)"


def test_a_restart_at_the_code_prompt_counts_and_is_audited(sign_in) -> None:
    service, _, audit, clock, secret = sign_in
    attempts = service.over_connection("10.0.0.2", clock=clock)
    for _ in range(3):
        attempts.begin("bob", "password")
        attempts.answer_password(PASSWORD)  # right, but the code never comes
    attempts.closed("client disconnected", began_auth=True, name="bob", reached="")
    reasons = [(action, reason) for action, reason, _ in auth_events(audit)]
    assert reasons == [
        ("auth.failure", "abandoned at the verification code prompt "
                         "(keyboard-interactive restarted)"),
        ("auth.failure", "abandoned at the verification code prompt "
                         "(keyboard-interactive restarted)"),
        ("auth.backoff", "too many failures (pair)"),
        ("auth.failure", "abandoned at the verification code prompt (client disconnected)"),
    ]  # fmt: skip
    assert auth_events(audit)[0][2]["stage"] == "verification code prompt"
    # Three abandoned attempts are three failures: the pair is held back.
    fresh = service.over_connection("10.0.0.2", clock=clock)
    fresh.begin("bob", "password")
    fresh.answer_password(PASSWORD).result()
    assert fresh.answer_code(code(secret, clock)).blocked


def test_abandoned_at_the_password_prompt_and_silent_connections_count(sign_in) -> None:
    service, _, audit, clock, _ = sign_in
    attempts = service.over_connection("10.0.0.3", clock=clock)
    attempts.begin("bob", "password")
    attempts.closed("login timeout", began_auth=True, name="bob", reached="keyboard-interactive")
    silent = service.over_connection("10.0.0.3", clock=clock)
    silent.closed("client disconnected", began_auth=True, name="bob", reached="publickey offered")
    events = auth_events(audit)
    assert [reason for _, reason, _ in events] == [
        "abandoned at the password prompt (login timeout)",
        "disconnected before any attempt (client disconnected)",
    ]
    assert events[1][2]["stage"] == "publickey offered"
    never_asked = service.over_connection("10.0.0.3", clock=clock)
    never_asked.closed("client disconnected", began_auth=False, name="", reached="none")
    assert len(auth_events(audit)) == 2  # a port scan that never asked to sign in


@pytest.mark.parametrize(
    "answer",
    ["١٢٣٤٥٦", "１２３４５６", "¹²³⁴⁵⁶", "12345", "1234567", "", "x" * 100_000, "12 34 5٦", None],
    ids=["arabic-indic", "full-width", "superscript", "5", "7", "empty", "100k", "mixed", "none"],
)
def test_malformed_codes_are_refused_like_wrong_ones(sign_in, answer) -> None:
    service, _, audit, clock, _ = sign_in
    attempts = service.over_connection("10.0.0.4", clock=clock)
    attempts.begin("bob", "password")
    attempts.answer_password(PASSWORD).result()
    result = attempts.answer_code(answer)  # no exception, whatever the script
    assert result.user is None
    assert result.reason.startswith("malformed verification code")
    assert auth_events(audit)[-1][:2] == ("auth.failure", result.reason)


@pytest.mark.parametrize(
    "answer", ["x" * 1025, None, "ٱلسر" * 300], ids=["1025", "none", "arabic-1200"]
)
def test_malformed_passwords_are_refused_unchecked(sign_in, answer) -> None:
    service, _, audit, clock, secret = sign_in
    attempts = service.over_connection("10.0.0.5", clock=clock)
    attempts.begin("bob", "password")
    attempts.answer_password(answer).result()
    result = attempts.answer_code(code(secret, clock))
    assert result.user is None
    assert auth_events(audit)[-1][0] == "auth.failure"


def test_codes_must_be_six_ascii_digits() -> None:
    assert code_problem("123456") == "" and code_problem(" 123 456 ") == ""
    assert code_problem("١٢٣٤٥٦").startswith("malformed")


def test_a_code_sent_before_the_password_was_checked_fails_closed(sign_in) -> None:
    service, _, audit, clock, secret = sign_in
    attempts = service.over_connection("10.0.0.6", clock=clock)
    attempts.begin("bob", "password")
    # The client answers twice before the first answer is checked: the second answer
    # arrives as the code while the password's verdict is still unknown.
    attempt = attempts._attempt
    assert attempt is not None
    service.count(attempt)
    attempt.stage = "verification code prompt"
    result = attempts.answer_code(code(secret, clock))
    assert result.user is None
    assert result.reason == "the code was sent before the password was checked"


def test_success_takes_back_its_count(sign_in) -> None:
    service, _, _, clock, secret = sign_in
    for step in range(5):  # far more than user_source_failures = 3
        clock.now += 30  # a fresh code each time
        attempts = service.over_connection("10.0.0.7", clock=clock)
        assert attempts.begin("bob", "password")
        attempts.answer_password(PASSWORD).result()
        assert attempts.answer_code(code(secret, clock)).user is not None, step


def test_success_is_audited_and_the_code_is_burned(sign_in) -> None:
    service, _, audit, clock, secret = sign_in
    user = service.sign_in("bob", PASSWORD, code(secret, clock), source="cli:root@h",
                           purpose="request approve")  # fmt: skip
    assert user.name == "bob"
    action, _, details = auth_events(audit)[-1]
    assert action == "auth.success" and details["method"] == "password+totp"
    with pytest.raises(SignInFailed):  # the same code twice
        service.sign_in("bob", PASSWORD, code(secret, clock), source="cli:root@h",
                        purpose="request approve")  # fmt: skip
    assert auth_events(audit)[-1][:2] == ("auth.failure", "wrong or reused verification code")


def test_a_success_that_cannot_be_audited_is_a_failure(sign_in, monkeypatch) -> None:
    service, _, audit, clock, secret = sign_in
    real_record = audit.record

    def record(trail: Trail, event: AuditEvent):  # noqa: ANN202
        if event.action == "auth.success":
            raise StoreError("disk full")
        return real_record(trail, event)

    monkeypatch.setattr(audit, "record", record)
    attempts = service.over_connection("10.0.0.1", clock=clock)
    attempts.begin("bob", "password")
    attempts.answer_password(PASSWORD).result()
    result = attempts.answer_code(code(secret, clock))
    assert result.user is None and result.reason == "the login could not be audited"
    assert auth_events(audit)[-1][:2] == ("auth.failure", "the login could not be audited")


def test_the_failure_delay_applies_on_every_path(store: Store) -> None:
    """A wrong answer, a restart and a walk-away each hold the next prompt back by the delay
    (1 s doubling with the address's failures, as the limiter says), measured from the
    attempt's start on the connection's clock."""
    clock = Clock()
    audit = AuditLog(store, clock=clock)
    users = UserDirectory(store, audit, secret_box=test_secret_box(), clock=clock)
    users.add_user("bob", actor="tests", password=PASSWORD)
    settings = AuthSettings(failure_delay_seconds=1, source_failures=100)
    service = SignIn(users, FailureLimiter(store, audit, settings, clock=clock), audit, settings)
    attempts = service.over_connection("10.0.0.8", clock=clock)
    waits = []
    for step in ("wrong", "restart", "restart"):
        attempts.begin("bob", "password")
        attempts.answer_password("wrong" if step == "wrong" else PASSWORD).result()
        if step == "wrong":
            attempts.answer_code("000000")
        else:
            attempts.settle_open("keyboard-interactive restarted")
        waits.append(attempts.wait_seconds())
        clock.now += attempts.wait_seconds()
    assert waits == [1.0, 2.0, 4.0]


# -- issue 23: a code used a moment ago, one prompt for both, login certificates ---------


def test_a_reused_code_leaves_the_attempt_open_twice_then_fails(sign_in) -> None:
    service, _, audit, clock, secret = sign_in
    used = code(secret, clock)
    first = service.over_connection("10.0.0.9", clock=clock)
    assert first.begin("bob", "password")
    first.answer_password(PASSWORD).result()
    assert first.answer_code(used).user is not None
    again = service.over_connection("10.0.0.9", clock=clock)
    assert again.begin("bob", "password")
    again.answer_password(PASSWORD).result()
    for _ in range(2):
        result = again.answer_code(used)
        assert result.retry_code
        assert result.reason == "that code was already used; wait for the next one"
        assert again.expecting == "code"
    final = again.answer_code(used)  # the third time: a failure like any wrong code
    assert final.user is None and not final.retry_code
    actions = [a for a, _, _ in auth_events(audit)]
    assert actions[-3:] == ["auth.code_reused", "auth.code_reused", "auth.failure"]
    assert auth_events(audit)[-1][1] == "wrong or reused verification code"


def test_a_reused_code_then_the_next_one_signs_in(sign_in) -> None:
    service, _, _, clock, secret = sign_in
    used = code(secret, clock)
    assert service.sign_in("bob", PASSWORD, used, source="cli", purpose="x").name == "bob"
    attempts = service.over_connection("10.0.0.10", clock=clock)
    assert attempts.begin("bob", "password")
    attempts.answer_password(PASSWORD).result()
    assert attempts.answer_code(used).retry_code
    assert attempts.answer_code(pyotp.TOTP(secret).at(clock.now + 30)).user is not None


def test_the_one_shot_path_never_retries_a_reused_code(sign_in) -> None:
    service, _, audit, clock, secret = sign_in
    used = code(secret, clock)
    service.sign_in("bob", PASSWORD, used, source="cli", purpose="x")
    with pytest.raises(SignInFailed):
        service.sign_in("bob", PASSWORD, used, source="cli", purpose="x")
    assert auth_events(audit)[-1][:2] == ("auth.failure", "wrong or reused verification code")


@pytest.mark.parametrize(
    ("answer", "split"),
    [
        ("secret123456", ("secret", "123456")),
        ("x000000", ("x", "000000")),
        ("123456", None),  # nothing before the code
        ("secret12345", None),
        ("secret١٢٣٤٥٦", None),  # Arabic-Indic digits are not a code
        (None, None),
    ],
)
def test_split_password_and_code(answer: str | None, split: tuple[str, str] | None) -> None:
    assert split_password_and_code(answer) == split


def test_a_login_certificate_of_a_disabled_user_is_refused_and_audited(sign_in) -> None:
    service, users, audit, _, _ = sign_in
    login = CertificateLogin(
        user="bob", serial=7, key_fingerprint="SHA256:x", valid_before=datetime.now(UTC),
        mfa_at=None, source_address=None,
    )  # fmt: skip
    assert service.sign_in_with_certificate(login, "10.0.0.11").user is not None
    action, _, details = auth_events(audit)[-1]
    assert action == "auth.success" and details["method"] == "login-cert"
    assert details["serial"] == 7
    users.set_disabled("bob", True, actor="tests")
    result = service.sign_in_with_certificate(login, "10.0.0.11")
    assert result.user is None
    assert auth_events(audit)[-1][:2] == ("auth.failure", "user disabled")
