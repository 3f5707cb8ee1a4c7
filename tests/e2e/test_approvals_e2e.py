"""Requests and grants end to end: ssh waits, another process approves, the grant ends it."""

from __future__ import annotations

import re
import time

import pytest

from gateway.domain.audit.trail import Trail
from tests.support.gateway import Gateway, decide, spawn_shell, start_waiting

pytestmark = pytest.mark.openssh


def test_waiting_session_proceeds_when_approved_from_another_process(gateway: Gateway) -> None:
    requester = gateway.make_user(groups=("requesters",))
    approver = gateway.make_user(groups=("leads",))
    process, request_id = start_waiting(gateway, requester, "echo approved-and-running")
    listing = gateway.cli("request", "list")
    assert f"#{request_id}" in listing.stdout and requester.name in listing.stdout
    approved = decide(gateway, "approve", request_id, approver)
    assert approved.returncode == 0, approved.stderr
    # Timed from the decision's commit, not from the CLI's start (slow on a loaded machine).
    started = time.monotonic()
    stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert stdout == b"approved-and-running\n"
    assert time.monotonic() - started < 5
    session_start = [r for r in gateway.audit.events(Trail.HUMAN)
                     if r.action == "session.start" and r.actor == requester.name]  # fmt: skip
    assert session_start and session_start[0].authority.startswith("grant:")


def test_denial_is_shown_to_the_requester(gateway: Gateway) -> None:
    requester = gateway.make_user(groups=("requesters",))
    approver = gateway.make_user(groups=("leads",))
    process, request_id = start_waiting(gateway, requester, "echo must-not-run")
    assert decide(gateway, "deny", request_id, approver, "change freeze").returncode == 0
    stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 255 and stdout == b""
    assert f"was denied by {approver.name}: change freeze".encode() in stderr


def test_self_approval_and_outsiders_are_refused_and_quorum_counts(gateway: Gateway) -> None:
    requester = gateway.make_user(groups=("cautious", "leads"))
    first, second, outsider, other_approver = (
        gateway.make_user(groups=groups)
        for groups in (("leads",), ("leads",), ("admins",), ("approvers",))
    )  # fmt: skip
    process, request_id = start_waiting(gateway, requester, "echo after-two")
    try:
        own = decide(gateway, "approve", request_id, requester, next_code=True)
        assert own.returncode == 1 and "cannot decide your own request" in own.stderr
        refused = [
            r
            for r in gateway.audit.events(Trail.HUMAN)
            if r.action == "request.decision_refused" and r.actor == requester.name
        ]
        assert refused and "own request" in refused[0].reason  # fmt: skip
        other = decide(gateway, "approve", request_id, outsider)
        assert other.returncode == 1 and "You need the approver role" in other.stderr
        # An approver ([console] approver_groups), but not one of this rule's.
        elsewhere = decide(gateway, "approve", request_id, other_approver)
        assert elsewhere.returncode == 1 and "not in an approver group" in elsewhere.stderr
        wrong = gateway.cli(
            "request",
            "approve",
            str(request_id),
            "--as",
            first.name,
            "--password-stdin",
            "--totp",
            "000000",
            input_text="bad password\n",
        )
        assert wrong.returncode == 1 and "authentication as" in wrong.stderr
        assert "1 of 2 approvals" in decide(gateway, "approve", request_id, first).stdout
        assert process.poll() is None  # still waiting
        assert "approved" in decide(gateway, "approve", request_id, second).stdout
        stdout, _ = process.communicate(timeout=20)
    finally:
        process.kill()
    assert stdout == b"after-two\n"


def test_grant_end_closes_the_session(gateway: Gateway) -> None:
    requester = gateway.make_user(groups=("brief",))
    approver = gateway.make_user(groups=("leads",))
    process, request_id = start_waiting(gateway, requester, "echo started; sleep 60")
    decide(gateway, "approve", request_id, approver)
    stdout, stderr = process.communicate(timeout=30)
    assert stdout == b"started\n"
    assert re.search(rb"grant #\d+ has ended; the session was closed", stderr)


def test_revoking_the_grant_ends_the_session(gateway: Gateway) -> None:
    requester = gateway.make_user(groups=("requesters",))
    approver = gateway.make_user(groups=("leads",))
    process, request_id = start_waiting(gateway, requester, "echo started; sleep 60")
    grant_id = re.search(r"grant #(\d+)", decide(gateway, "approve", request_id, approver).stdout)
    assert process.stdout is not None and process.stdout.readline() == b"started\n"
    assert gateway.cli("grant", "revoke", grant_id.group(1), "--reason", "incident").returncode == 0
    revoked_at = time.monotonic()
    _, stderr = process.communicate(timeout=20)
    assert time.monotonic() - revoked_at < 4
    assert b"was revoked (incident)" in stderr


def test_disabling_a_user_ends_their_sessions(gateway: Gateway) -> None:
    user = gateway.make_user()
    process = gateway.start_ssh(user, "web01", "echo started; sleep 60")
    assert process.stdout is not None and process.stdout.readline() == b"started\n"
    assert gateway.cli("user", "disable", user.name).returncode == 0
    disabled_at = time.monotonic()
    _, stderr = process.communicate(timeout=20)
    assert time.monotonic() - disabled_at < 4
    assert f"user {user.name} was disabled".encode() in stderr


def test_unanswered_request_expires(tmp_path) -> None:
    from tests.conftest import launch_gateway

    with launch_gateway(tmp_path, '\n[approvals]\nrequest_ttl = "2s"\n') as own:
        requester = own.make_user(groups=("requesters",))
        process, request_id = start_waiting(own, requester, "echo never")
        _, stderr = process.communicate(timeout=20)
        assert process.returncode == 255
        assert f"request #{request_id} was expired".encode() in stderr
        assert "expired" in own.cli("request", "list", "--all").stdout


def test_ctrl_c_cancels_a_waiting_request(gateway: Gateway) -> None:
    import pexpect

    requester = gateway.make_user(groups=("requesters",))
    child = spawn_shell(gateway, requester, "web01")
    try:
        child.expect(r"Request #(\d+) for web01")
        request_id = int(child.match.group(1))
        child.sendcontrol("c")
        child.expect(f"request #{request_id} cancelled")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert f"#{request_id} " in gateway.cli("request", "list", "--all").stdout
    assert "cancelled" in gateway.cli("request", "list", "--all").stdout


def test_user_is_warned_before_the_grant_ends(gateway: Gateway) -> None:
    requester = gateway.make_user(groups=("minute",))
    approver = gateway.make_user(groups=("leads",))
    process, request_id = start_waiting(gateway, requester, "echo started; sleep 30")
    decide(gateway, "approve", request_id, approver)
    assert process.stdout is not None and process.stdout.readline() == b"started\n"
    assert process.stderr is not None
    deadline = time.monotonic() + 15
    seen = b""
    while b"ends in 1 min" not in seen:
        assert time.monotonic() < deadline, seen
        seen += process.stderr.readline()
    process.kill()
    process.wait()


def test_approver_mistakes_are_refused_early_audited_and_counted(gateway: Gateway) -> None:
    requester = gateway.make_user(groups=("requesters",))
    approver = gateway.make_user(groups=("leads",))
    process, request_id = start_waiting(gateway, requester, "echo ok")
    try:
        # Checks that need no authentication come first: no code is spent on them.
        no_comment = gateway.cli("request", "deny", str(request_id), "--as", approver.name,
                                 "--totp", "000000", input_text="x\n")  # fmt: skip
        assert no_comment.returncode == 1 and "needs --comment" in no_comment.stderr
        wrong = gateway.cli(
            "request", "approve", str(request_id), "--as", approver.name,
            "--password-stdin", "--totp", "123456", input_text="wrong\n",
        )  # fmt: skip
        assert wrong.returncode == 1 and f"authentication as {approver.name} failed" in wrong.stderr
        failures = [r for r in gateway.audit.events(Trail.HUMAN)
                    if r.action == "auth.failure" and r.actor == approver.name]  # fmt: skip
        assert failures and failures[-1].source.startswith("cli:")
        assert decide(gateway, "approve", request_id, approver).returncode == 0
        process.communicate(timeout=20)
        again = gateway.cli("request", "approve", str(request_id), "--as", approver.name,
                            "--totp", "000000", input_text="x\n")  # fmt: skip
        assert again.returncode == 1 and "is approved, not pending" in again.stderr
    finally:
        process.kill()
