"""Break-glass and self-service requests: unit rules, then the stock ssh end to end."""

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

from gateway.config import ApprovalSettings, RuleSettings
from gateway.domain.alerts import WebhookAlerts
from gateway.domain.audit.trail import AuditLog, Trail
from gateway.domain.breakglass import BreakGlass, BreakGlassError
from gateway.domain.identities import UserDirectory
from gateway.store.database import Store
from tests.conftest import Gateway, launch_gateway, spawn_shell
from tests.test_approvals_e2e import decide
from tests.test_identities import Clock

RULE = RuleSettings(
    id="r", groups=["ops"], targets=["*"], mode="approval", approver_groups=["leads"],
    break_glass=True, break_glass_max_duration="30m",
)  # fmt: skip
WHY = "database down, customers cannot pay"


@pytest.fixture()
def breakglass(store: Store) -> tuple[BreakGlass, Clock]:
    clock = Clock()
    audit = AuditLog(store, clock=clock)
    users = UserDirectory(store, audit, clock=clock)
    for name, groups in (("alice", ["ops"]), ("rita", ["auditors"]), ("olga", ["ops"])):
        users.add_user(name, actor="root", groups=groups, password="a long password")
    service = BreakGlass(store, audit, WebhookAlerts([], audit), ApprovalSettings(), clock=clock)
    return service, clock


def test_invoke_needs_eligibility_and_a_justification(breakglass) -> None:
    service, _ = breakglass
    with pytest.raises(BreakGlassError, match="at least 20 characters"):
        service.invoke(user="alice", target="db", account="root", rule=RULE, justification="urgent",
                       source="10.0.0.1")  # fmt: skip
    ineligible = RULE.model_copy(update={"break_glass": False})
    with pytest.raises(BreakGlassError, match="does not allow break-glass"):
        service.invoke(user="alice", target="db", account="root", rule=ineligible,
                       justification=WHY, source="10.0.0.1")  # fmt: skip
    case, grant = service.invoke(user="alice", target="db", account="root", rule=RULE,
                                 justification=WHY, source="10.0.0.1")  # fmt: skip
    assert grant.authority == f"breakglass:{case.id}"
    assert (grant.ends_at - grant.starts_at).total_seconds() == 30 * 60


def test_review_rules_and_overdue(breakglass) -> None:
    service, clock = breakglass
    case, _ = service.invoke(user="alice", target="db", account="root", rule=RULE,
                             justification=WHY, source="10.0.0.1")  # fmt: skip
    assert [c.id for c in service.list(unreviewed=True)] == [case.id]
    assert service.list(overdue=True) == []
    clock.now += 25 * 3600
    assert [c.id for c in service.list(overdue=True)] == [case.id]
    with pytest.raises(BreakGlassError, match="your own"):
        service.review(case.id, "alice", "justified", "fine by me")
    with pytest.raises(BreakGlassError, match="not in a reviewer group"):
        service.review(case.id, "olga", "justified", "she asked me")
    with pytest.raises(BreakGlassError, match="verdict must be"):
        service.review(case.id, "rita", "maybe", "hmm")
    reviewed = service.review(case.id, "rita", "unjustified", "could have waited for approval")
    assert (reviewed.verdict, reviewed.reviewed_by) == ("unjustified", "rita")
    with pytest.raises(BreakGlassError, match="reviewed already"):
        service.review(case.id, "rita", "justified", "changed my mind")
    assert service.list(unreviewed=True) == []


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


def test_failing_webhook_never_blocks_and_is_audited(store: Store) -> None:
    audit = AuditLog(store)
    alerts = WebhookAlerts(["http://127.0.0.1:9/unreachable"], audit)
    started = time.monotonic()
    alerts.send("breakglass.invoked", {"case": 1}, authority="breakglass:1")
    assert time.monotonic() - started < 0.5
    deadline = time.monotonic() + 20
    while "alert.failed" not in [r.action for r in audit.events(Trail.HUMAN)]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    failed = [r for r in audit.events(Trail.HUMAN) if r.action == "alert.failed"][0]
    assert failed.authority == "breakglass:1" and json.loads(failed.details)["attempts"] == 4


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
