"""The login path against hostile clients: what a raw asyncssh client can do that ssh does not.

Each test is the client an attacker would write: restarting keyboard-interactive
instead of giving the code, Unicode digits in the code, walking away at the
code prompt, failing logins from many addresses to lock someone out. Every
such attempt must count, be audited with its real reason, and cost the same
delay as a wrong answer.
"""

from __future__ import annotations

import json
import time

import pyotp
import pytest

from gateway.domain.audit.trail import Trail
from tests.support.gateway import Gateway, current_code, wait_for_log
from tests.support.hostile import hostile_login

pytestmark = pytest.mark.openssh

RESTARTED = "abandoned at the verification code prompt (keyboard-interactive restarted)"


def auth_events(gateway: Gateway, name: str) -> list[dict[str, object]]:
    return [
        {**json.loads(r.details), "action": r.action, "reason": r.reason, "source": r.source}
        for r in gateway.audit.events(Trail.HUMAN)
        if r.action.startswith("auth.") and r.actor == name
    ]


#: After a refusal asyncssh's client (like ssh with NumberOfPasswordPrompts > 1) asks
#: again; the scripted clients below then have nothing to say and leave at the new
#: password prompt, which is audited (and counted) too.
LEFT_AT_PASSWORD = "abandoned at the password prompt (client disconnected)"


def wait_for_auth_events(
    gateway: Gateway, name: str, count: int, timeout: float = 10, *, skip: str = LEFT_AT_PASSWORD
) -> list[dict[str, object]]:
    """The first ``count`` auth.failure events of ``name`` (other than ``skip``), waiting for
    them (the gateway writes some after the client has gone)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [
            e for e in auth_events(gateway, name)
            if e["action"] == "auth.failure" and e["reason"] != skip
        ]  # fmt: skip
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


async def test_restarting_at_the_code_prompt_gets_no_free_password_checks(
    gateway: Gateway,
) -> None:
    """Answer ``Password:``, then restart keyboard-interactive instead of giving the code."""
    user = gateway.make_user()
    login = f"{user.name}:web01"
    transcript = await hostile_login(
        gateway.port, login, {"Password": [user.password] * 12, "Verification": [None] * 12},
        source="127.0.11.1",
    )  # fmt: skip
    # max_attempts_per_connection = 3 (default): then the gateway hangs up (asyncssh
    # reports "no more auth methods" as permission denied, or a broken pipe when its
    # restart crosses the disconnect).
    assert transcript.passwords_sent == 3, transcript
    assert transcript.outcome == "denied" or transcript.outcome.startswith("disconnected"), (
        transcript
    )
    failures = wait_for_auth_events(gateway, user.name, 4)
    assert [e["reason"] for e in failures] == [RESTARTED] * 3 + [
        "too many attempts on one connection (3)"
    ]
    assert all(e["stage"] == "verification code prompt" for e in failures[:3])
    # Counted like wrong answers: that address is now held back for this user, even with
    # the right password and code (user_source_failures = 3 in the test config) ...
    held = await hostile_login(
        gateway.port, login, {"Password": [user.password], "Verification": [current_code(user)]},
        source="127.0.11.1",
    )  # fmt: skip
    assert held.outcome != "ok"
    assert wait_for_auth_events(gateway, user.name, 5)[4]["reason"].startswith("throttled (pair)")
    # ... and nowhere else.
    fine = await hostile_login(
        gateway.port, login, {"Password": [user.password], "Verification": [current_code(user)]},
        source="127.0.11.2",
    )  # fmt: skip
    assert fine.outcome == "ok", fine


async def test_unicode_digits_in_the_code_are_refused_like_a_wrong_code(gateway: Gateway) -> None:
    """Arabic-Indic digits after the right password: the normal refusal, not a crash."""
    user = gateway.make_user()
    login = f"{user.name}:web01"
    outcomes = {}
    for label, code in (("arabic-indic", "١٢٣٤٥٦"), ("wrong ascii", "000000")):
        transcript = await hostile_login(
            gateway.port, login, {"Password": [user.password], "Verification": [code]},
            source="127.0.11.3",
        )  # fmt: skip
        # Refused, then asked for a password again (the connection stays up): the same
        # answer a wrong code gets, so the answer says nothing about the password.
        outcomes[label] = (transcript.outcome, [p for p, _ in transcript.prompts])
    assert outcomes["arabic-indic"] == outcomes["wrong ascii"]
    assert outcomes["arabic-indic"][0] == "denied"
    assert outcomes["arabic-indic"][1] == ["Password: ", "Verification code: ", "Password: "]
    reasons = [e["reason"] for e in wait_for_auth_events(gateway, user.name, 2)]
    assert reasons[0].startswith("malformed verification code")
    assert reasons[1] == "wrong or reused verification code"


async def test_many_answers_and_huge_answers_are_refused_like_wrong_ones(gateway: Gateway) -> None:
    user = gateway.make_user()
    login = f"{user.name}:web01"
    for index, answers in enumerate((
        {"Password": [[user.password, user.password]], "Verification": ["000000"]},
        {"Password": ["p" * 200_000], "Verification": ["000000"]},
        {"Password": [user.password], "Verification": [["1", "2"]]},
    )):  # fmt: skip
        transcript = await hostile_login(
            gateway.port, login, answers, source=f"127.0.11.{40 + index}"
        )
        assert transcript.outcome == "denied", transcript
    reasons = [e["reason"] for e in wait_for_auth_events(gateway, user.name, 3)]
    assert reasons == [
        "the answer to the password prompt was not one string",
        "a password of 200000 characters",
        "malformed verification code (not one answer)",
    ]
    gateway.cli("user", "unlock", user.name)


async def test_walking_away_at_the_code_prompt_is_audited_and_counted(gateway: Gateway) -> None:
    """sshpass, ``plink -pw``, most libraries' ``password=``: a password, then goodbye."""
    user = gateway.make_user()
    login = f"{user.name}:web01"
    for _ in range(3):
        await hostile_login(
            gateway.port, login, {"Password": ["guess"], "Verification": ["<disconnect>"]},
            source="127.0.11.5",
        )  # fmt: skip
    failures = wait_for_auth_events(gateway, user.name, 3)
    assert [e["reason"] for e in failures] == [
        "abandoned at the verification code prompt (client disconnected)"
    ] * 3
    assert [e["stage"] for e in failures] == ["verification code prompt"] * 3
    backoffs = [e for e in auth_events(gateway, user.name) if e["action"] == "auth.backoff"]
    assert backoffs and backoffs[0]["scope"] == "pair"
    # Protocol-level disconnects are logged too.
    needle = "human lane: connection from 127.0.11.5 ended (not signed in): client disconnected"
    assert needle in wait_for_log(gateway, needle)


async def test_failures_from_many_addresses_lock_nobody_out(gateway: Gateway) -> None:
    """Five wrong logins from a mix of addresses used to lock a known user out everywhere."""
    bob = gateway.make_user(groups=("admins", "leads"), key=True)
    for index in range(8):
        transcript = await hostile_login(
            gateway.port, f"{bob.name}:web01",
            {"Password": [f"wrong-{index}"], "Verification": ["000000"]},
            source=f"127.0.12.{index % 4 + 1}",
        )  # fmt: skip
        assert transcript.outcome == "denied"
    # bob, from his own address, with his password or his key:
    by_password = gateway.run_ssh(bob, "web01", "echo in", source="127.0.12.100")
    assert by_password.returncode == 0, by_password.stderr
    # The next step's code (within the one-step skew): this step's was just used.
    next_code = pyotp.TOTP(bob.totp_secret).at(time.time() + 30)
    by_key = gateway.run_ssh(bob, "web01", "echo in", use_key=True, code=next_code,
                             source="127.0.12.101")  # fmt: skip
    assert by_key.returncode == 0, by_key.stderr
