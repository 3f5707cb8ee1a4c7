"""The one sign-in service: the console/CLI path and the SSH lane's path keep the same books."""

from __future__ import annotations

import pyotp
import pytest

from gateway.config import AuthSettings
from gateway.domain.audit.trail import AuditEvent, AuditLog, Trail
from gateway.domain.identities import UserDirectory
from gateway.domain.lockout import FailureLimiter
from gateway.domain.sign_in import SignIn, SignInFailed
from gateway.errors import StoreError
from gateway.store.database import Store
from tests.support.clock import Clock

PASSWORD = "a long password"
SETTINGS = AuthSettings(
    max_failures_per_user=3, max_failures_per_source=50, lockout_seconds=60,
    failure_delay_seconds=0,
)  # fmt: skip


@pytest.fixture()
def sign_in(store: Store) -> tuple[SignIn, UserDirectory, AuditLog, Clock, str]:
    clock = Clock()
    audit = AuditLog(store, clock=clock)
    users = UserDirectory(store, audit, clock=clock)
    secret = users.add_user("bob", actor="tests", groups=["leads"], password=PASSWORD).secret
    limiter = FailureLimiter(store, audit, SETTINGS, clock=clock)
    return SignIn(users, limiter, audit, SETTINGS.lockout_seconds), users, audit, clock, secret


def auth_events(audit: AuditLog) -> list[tuple[str, str, str]]:
    return [
        (r.action, r.reason, r.details)
        for r in audit.events(Trail.HUMAN)
        if r.action.startswith("auth.")
    ]


def code(secret: str, clock: Clock) -> str:
    return pyotp.TOTP(secret).at(clock.now)


def test_console_lockout_lands_in_the_trail_as_the_ssh_one_does(sign_in) -> None:
    service, _, audit, clock, secret = sign_in
    for _ in range(3):
        with pytest.raises(SignInFailed):
            service.sign_in("bob", "wrong", code(secret, clock), source="console:host",
                            purpose="console")  # fmt: skip
    console = auth_events(audit)
    assert [(action, reason) for action, reason, _ in console] == [
        ("auth.failure", "wrong password"),
        ("auth.failure", "wrong password"),
        ("auth.failure", "wrong password"),
        ("auth.lockout", "too many failures (user)"),
    ]
    assert all('"purpose":"console"' in details for _, _, details in console)
    # Locked out now: the right password and code are refused too, and say why in the trail.
    with pytest.raises(SignInFailed):
        service.sign_in("bob", PASSWORD, code(secret, clock), source="console:host",
                        purpose="console")  # fmt: skip
    assert auth_events(audit)[-1][:2] == ("auth.failure", "locked out (user)")


def test_ssh_path_keeps_the_same_books(sign_in) -> None:
    service, _, audit, clock, secret = sign_in
    for _ in range(3):
        ok = service.check_password("bob", "wrong")
        result = service.complete("bob", first_factor="password", first_factor_ok=ok,
                                  code=code(secret, clock), source="10.0.0.1")  # fmt: skip
        assert result.user is None
    assert result.locked and result.new_lockouts == ("user",)
    assert [(action, reason) for action, reason, _ in auth_events(audit)] == [
        ("auth.failure", "wrong password"),
        ("auth.failure", "wrong password"),
        ("auth.failure", "wrong password"),
        ("auth.lockout", "too many failures (user)"),
    ]


def test_success_is_audited_and_the_code_is_burned(sign_in) -> None:
    service, _, audit, clock, secret = sign_in
    user = service.sign_in("bob", PASSWORD, code(secret, clock), source="cli:root@h",
                           purpose="request approve")  # fmt: skip
    assert user.name == "bob"
    action, _, details = auth_events(audit)[-1]
    assert action == "auth.success" and '"method":"password+totp"' in details
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
    result = service.complete("bob", first_factor="password", first_factor_ok=True,
                              code=code(secret, clock), source="10.0.0.1")  # fmt: skip
    assert result.user is None and result.reason == "the login could not be audited"
    assert auth_events(audit)[-1][:2] == ("auth.failure", "the login could not be audited")
