"""Break-glass end to end: the waiting prompt with the stock ssh, and self-service over SSH."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pexpect
import pyotp
import pytest

from gateway.domain.audit.trail import Trail
from tests.support.gateway import Gateway, decide, launch_gateway, spawn_shell

WHY = "database down, customers cannot pay"


class _Hooks(BaseHTTPRequestHandler):
    received: list[dict[str, object]] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hooks.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.openssh
def test_break_glass_at_the_waiting_prompt_alerts_and_needs_review(tmp_path: Path) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Hooks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_port}/hook"
    extra = f'\n[approvals]\nwebhooks = ["{hook}"]\nreviewer_groups = ["leads"]\n'
    try:
        with launch_gateway(tmp_path, extra) as own:
            user = own.make_user(groups=("requesters",))
            child = spawn_shell(own, user, "web01")
            try:
                child.expect("Press b for break-glass")
                child.send("b")
                child.expect("Break-glass justification")
                child.sendline("too short")
                child.expect("at least 20 characters")
                child.sendline(WHY)
                child.expect(r"BREAK-GLASS #(\d+)")
                case_id = child.match.group(1).decode()
                child.sendline("echo inside-the-emergency; exit")
                child.expect("inside-the-emergency")
                child.expect(pexpect.EOF)
            finally:
                child.close()
            deadline = time.monotonic() + 10
            while not any(h.get("kind") == "breakglass.invoked" for h in _Hooks.received):
                assert time.monotonic() < deadline, _Hooks.received
                time.sleep(0.1)
            alert = next(h for h in _Hooks.received if h.get("kind") == "breakglass.invoked")
            assert alert["user"] == user.name and alert["justification"] == WHY
            # The request the login opened first was announced too (approvers get paged).
            assert any(h.get("kind") == "request.created" and h.get("user") == user.name
                       for h in _Hooks.received)  # fmt: skip
            authority = f"breakglass:{case_id}"
            while "alert.sent" not in [r.action for r in own.audit.events(Trail.HUMAN)]:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            records = [r for r in own.audit.events(Trail.HUMAN) if r.authority == authority]
            assert {"breakglass.invoked", "alert.sent", "session.start"} <= {
                r.action for r in records
            }
            listing = own.cli("breakglass", "list", "--unreviewed")
            assert f"#{case_id}" in listing.stdout
            # Only someone else in a reviewer group may review it.
            reviewer = own.make_user(groups=("leads",))
            code = pyotp.TOTP(reviewer.totp_secret).now()
            reviewed = own.cli(
                "breakglass", "review", case_id, "--verdict", "justified", "--note", "outage",
                "--as", reviewer.name, "--password-stdin", "--totp", code,
                input_text=f"{reviewer.password}\n",
            )  # fmt: skip
            assert reviewed.returncode == 0, reviewed.stderr
            assert (
                own.cli("breakglass", "list", "--unreviewed").stdout.strip()
                == "no unreviewed break-glass cases"
            )
    finally:
        server.shutdown()


@pytest.mark.openssh
def test_self_service_commands_over_ssh(gateway: Gateway) -> None:
    user = gateway.make_user(groups=("requesters",))
    asked = gateway.run_ssh(user, None, "request web01 --for 5m --reason 'patch openssl'")
    assert asked.returncode == 0, asked.stderr
    found = re.search(rb"Request #(\d+) for web01 \(root\), 5 min, is waiting", asked.stdout)
    assert found, asked.stdout
    request_id = found.group(1)
    approver = gateway.make_user(groups=("leads",))
    assert decide(gateway, "approve", int(request_id), approver).returncode == 0
    # With the grant in place the login goes straight through (the code from the
    # first login is spent, so use the next one).
    next_code = pyotp.TOTP(user.totp_secret).at(time.time() + 30)
    listed = gateway.run_ssh(user, None, "requests", code=next_code)
    assert b"approved" in listed.stdout and b"grant:" in listed.stdout
    assert b"patch openssl" in listed.stdout
    glass = gateway.make_user(groups=("requesters",))
    # ssh drops local quotes: the reason is the rest of the line, quoted or not.
    invoked = gateway.run_ssh(glass, "web01", f"breakglass --reason {WHY}")
    assert invoked.returncode == 0 and b"BREAK-GLASS #" in invoked.stdout
    unknown = gateway.run_ssh(gateway.make_user(), None, "request nosuch --reason x")
    assert unknown.returncode == 255 and b"unknown target 'nosuch'" in unknown.stderr
