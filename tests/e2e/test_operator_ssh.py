"""Approvers, auditors and admins need nothing but ``ssh``: the console and admin commands
served by the gateway over SSH, after the human lane's two factors.

A stock ``ssh -tt`` in a real pty drives the console; stock ``ssh`` runs admin commands.
"""

from __future__ import annotations

import json
import time

import pexpect
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
        console.expect("Comment", timeout=15)
        console.send("\r")
        output, _ = waiting.communicate(timeout=30)
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
        console.expect("Requests", timeout=30)
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
        menu.expect("Requests", timeout=30)
        menu.send("\x11")
        menu.expect(pexpect.EOF, timeout=20)
    finally:
        menu.close(force=True)
    starts = trail(gateway, erin, "session.start")
    assert [s["kind"] for s in starts] == ["console"]
