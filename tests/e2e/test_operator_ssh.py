"""Approvers, auditors and admins need nothing but ``ssh``: the console and admin commands
served by the gateway over SSH, after the human lane's two factors.

A stock ``ssh -tt`` in a real pty drives the console; stock ``ssh`` runs admin commands.
"""

from __future__ import annotations

import json
import subprocess
import time

import pexpect
import pyotp
import pytest

from gateway.domain.audit.trail import Trail
from tests.support.gateway import Gateway, TestUser, spawn_shell, start_waiting

pytestmark = pytest.mark.openssh


def trail(gateway: Gateway, user: TestUser, action: str) -> list[dict[str, object]]:
    return [
        {**json.loads(r.details), "reason": r.reason, "target": r.target,
         "account": r.account, "session": r.session_id}
        for r in gateway.audit.events(Trail.HUMAN)
        if r.actor == user.name and r.action == action
    ]  # fmt: skip


def test_an_approver_approves_a_waiting_request_in_the_console_over_ssh(
    gateway: Gateway,
) -> None:
    alice = gateway.make_user(groups=("requesters",))
    bob = gateway.make_user(groups=("leads", "approvers"))
    waiting, request_id = start_waiting(gateway, alice, "echo approved-through-the-console")
    console = spawn_shell(gateway, bob, "console", rows=36, cols=120)
    try:
        console.expect("Pending requests", timeout=30)
        console.expect(alice.name, timeout=15)  # alice's request, live
        console.send("a")  # approve the highlighted request
        console.expect("Grant length", timeout=15)  # the dialog, with what is being granted
        console.send("\r")
        # Read the console while it works, as a terminal does: ssh blocks writing to a
        # pty nobody reads, and then it no longer reads the keys sent to it either.
        console.expect(rf"Request #{request_id}: approved", timeout=60)
        output, _ = waiting.communicate(timeout=60)
        assert waiting.returncode == 0, output
        assert b"approved-through-the-console" in output
        console.send("\x11")  # Ctrl-Q quits the console; the SSH session ends with it
        console.expect(pexpect.EOF, timeout=20)
    finally:
        console.close(force=True)
        if waiting.poll() is None:
            waiting.kill()
    approved = [e for e in trail(gateway, bob, "request.approved")
                if e.get("request") == request_id]  # fmt: skip
    assert approved, "the approval is bob's, in the human trail"
    deadline = time.monotonic() + 15
    while not (ends := trail(gateway, bob, "session.end")) and time.monotonic() < deadline:
        time.sleep(0.2)
    starts = trail(gateway, bob, "session.start")
    assert [(s["target"], s["account"], s["kind"]) for s in starts] == [
        ("pamgate", "console", "console")
    ]
    assert ends and ends[0]["session"] == starts[0]["session"]
    assert ends[0]["recording_sha256"], "the console session was recorded and sealed"


def test_the_console_over_ssh_ends_when_its_user_loses_the_role(gateway: Gateway) -> None:
    carl = gateway.make_user(groups=("auditors",))
    console = spawn_shell(gateway, carl, "console", rows=24, cols=80)
    try:
        console.expect("Pending requests", timeout=30)
        assert gateway.cli("user", "set-groups", carl.name, "--group", "ops").returncode == 0
        changed_at = time.monotonic()
        console.expect("no longer has a console role", timeout=10)
        console.expect(pexpect.EOF, timeout=10)
        assert time.monotonic() - changed_at < 5
    finally:
        console.close(force=True)
    assert console.exitstatus == 255


def test_no_console_for_a_user_without_a_console_role(gateway: Gateway) -> None:
    dora = gateway.make_user(groups=("admins",))  # reaches targets, holds no console role
    console = spawn_shell(gateway, dora, "console", rows=24, cols=80)
    try:
        console.expect("has no console role", timeout=30)
        console.expect(pexpect.EOF, timeout=10)
    finally:
        console.close(force=True)
    assert console.exitstatus == 255
    refused = trail(gateway, dora, "access.refused")
    assert refused and refused[0]["target"] == "console"
    assert not trail(gateway, dora, "session.start")


def test_the_menu_offers_the_console_to_those_with_a_role(gateway: Gateway) -> None:
    erin = gateway.make_user(groups=("admins", "auditors"))
    menu = spawn_shell(gateway, erin, "", rows=36, cols=120)
    try:
        menu.expect("c\\) console", timeout=30)
        menu.send("c\r")
        menu.expect("Pending requests", timeout=30)
        menu.send("\x11")
        menu.expect(pexpect.EOF, timeout=20)
    finally:
        menu.close(force=True)
    starts = trail(gateway, erin, "session.start")
    assert [s["kind"] for s in starts] == ["console"]


def admin(
    gateway: Gateway, user: TestUser, command: str, *, next_code: bool = False
) -> subprocess.CompletedProcess[bytes]:
    """``ssh USER:admin@gw COMMAND`` with the stock client (password and code by askpass).

    A code works once: a second login within the same 30 s uses the next step's code.
    """
    code = pyotp.TOTP(user.totp_secret).at(time.time() + 30) if next_code else None
    return gateway.run_ssh(user, "admin", command, timeout=60, code=code)


def test_admin_commands_over_ssh_act_as_the_signed_in_user_with_their_roles(
    gateway: Gateway,
) -> None:
    alice = gateway.make_user(groups=("requesters",))
    bob = gateway.make_user(groups=("leads", "approvers"))
    dave = gateway.make_user(groups=("auditors",))
    carol = gateway.make_user(groups=("admins",))  # reaches targets, no console role
    waiting, request_id = start_waiting(gateway, alice, "echo approved-over-ssh")
    try:
        listing = admin(gateway, bob, "request list --json")
        assert listing.returncode == 0, listing.stderr
        pending = [json.loads(line) for line in listing.stdout.splitlines()]
        assert request_id in [row["id"] for row in pending]
        # An auditor may look but not decide: refused by the domain, nothing changes.
        refused = admin(gateway, dave, f"request approve {request_id} --comment 'fine by me'")
        assert refused.returncode == 1
        assert b"You need the approver role to approve requests" in refused.stderr
        # No console role at all: refused at the gateway, before any command runs.
        stranger = admin(gateway, carol, "request list")
        assert stranger.returncode == 255 and b"has no console role" in stranger.stderr
        approved = admin(gateway, bob, f"request approve {request_id} --comment 'looks right'",
                         next_code=True)  # fmt: skip
        assert approved.returncode == 0, approved.stderr
        output, _ = waiting.communicate(timeout=30)
        assert b"approved-over-ssh" in output
    finally:
        if waiting.poll() is None:
            waiting.kill()
    admin_sessions = {s["session"] for s in trail(gateway, bob, "session.start")
                      if s["kind"] == "admin"}  # fmt: skip
    decision = [e for e in trail(gateway, bob, "request.approved")
                if e.get("request") == request_id]  # fmt: skip
    assert decision and decision[0]["reason"] == "looks right"
    assert decision[0]["via_session"] in admin_sessions, "tied to the SSH session that did it"
    assert [e for e in trail(gateway, dave, "operator.refused")]
    assert [e["target"] for e in trail(gateway, carol, "access.refused")] == ["admin"]


def test_an_export_over_ssh_is_the_recording_byte_for_byte(gateway: Gateway) -> None:
    ann = gateway.make_user(groups=("admins", "auditors"))
    ran = gateway.run_ssh(ann, "web01", "echo for-the-record")
    assert ran.returncode == 0, ran.stderr
    deadline = time.monotonic() + 15
    while not (ends := trail(gateway, ann, "session.end")) and time.monotonic() < deadline:
        time.sleep(0.2)
    session = str(ends[0]["session"])
    exported = admin(gateway, ann, f"recordings export {session} -o -", next_code=True)
    assert exported.returncode == 0, exported.stderr
    local = gateway.cli("recordings", "export", session, "-o", "-")
    assert exported.stdout == local.stdout.encode() and b"for-the-record" in exported.stdout
