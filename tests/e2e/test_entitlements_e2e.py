"""Entitlement review end to end: real ssh logins and machine-lane commands through the
gateway to a real sshd feed the access report; a never-used NHI command is excessive; a
campaign decided through the CLI (with the reviewer's password and TOTP code) narrows an
NHI so that its next out-of-scope command is refused; an overdue item suspends its NHI and
is announced by webhook; over SSH, reviewers decide as themselves and never about
themselves. A gateway of this module's own: its campaigns cover every identity it has."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pyotp
import pytest

from gateway.devtools.openssh_target import free_port
from gateway.domain.audit.trail import Trail
from gateway.services import GatewayServices
from tests.support.docs import page
from tests.support.gateway import Gateway, TestUser, launch_gateway
from tests.support.machines import issue, machine_ssh, register, trail_events

pytestmark = pytest.mark.openssh

RECEIVED: list[dict[str, object]] = []


class Hooks(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        RECEIVED.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """This module's gateway: overdue review items suspend their identity; webhooks here."""
    port = free_port()
    server = HTTPServer(("127.0.0.1", port), Hooks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    extra = f"""
[approvals]
webhooks = ["http://127.0.0.1:{port}/hook"]

[reviews]
suspend_overdue = true
"""
    try:
        with launch_gateway(tmp_path_factory.mktemp("entitlements"), extra) as running:
            yield running
    finally:
        server.shutdown()


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def next_code(user: TestUser) -> str:
    """A code from the next 30 s step: the user's login took this step's code."""
    return pyotp.TOTP(user.totp_secret).at(time.time() + 30)


def start_campaign(gateway: Gateway, due: str) -> int:
    started = gateway.cli("review", "start", "--of", "machines", "--due", due)
    assert started.returncode == 0, started.stderr
    found = re.search(r"review campaign #(\d+) of machines: (\d+) items", started.stdout)
    assert found, started.stdout
    return int(found.group(1))


def item_of(gateway: Gateway, campaign: int, identity: str) -> dict[str, object]:
    listed = gateway.cli("review", "list", str(campaign), "--json")
    assert listed.returncode == 0, listed.stderr
    return next(i for i in json_lines(listed.stdout) if i["identity"] == identity)


def test_real_logins_feed_the_access_report_in_json_csv_and_over_ssh(gateway: Gateway) -> None:
    alice = gateway.make_user(groups=("admins",))
    used = gateway.run_ssh(alice, "web01", "true")
    assert used.returncode == 0, used.stderr
    report = gateway.cli("access", "report", "--identity", alice.name, "--json")
    assert report.returncode == 0, report.stderr
    paths = {(p["target"], p["account"]): p for p in json_lines(report.stdout)}
    web = paths[("web01", "root")]
    assert (web["via"], web["authority"], web["sessions"]) == ("allow", "policy:admins-all", 1)
    assert web["last_used"] is not None and web["sources"] == []
    assert paths[("web01", "nobody")]["sessions"] == 0  # reachable, never used
    assert paths[("web01", "nobody")]["last_used"] is None

    as_csv = gateway.cli("access", "report", "--identity", alice.name, "--csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    row = next(r for r in rows if (r["target"], r["account"]) == ("web01", "root"))
    assert row["sessions"] == "1" and row["last_used"].endswith("Z")
    assert json.loads(row["limits"])["rule"] == "admins-all"

    # An auditor reads it over SSH with nothing but ssh; an approver may not.
    auditor = gateway.make_user(groups=("auditors",))
    remote = gateway.run_ssh(auditor, "admin", f"access report --identity {alice.name} --json")
    assert remote.returncode == 0, remote.stderr
    assert json_lines(remote.stdout.decode()) == json_lines(report.stdout)
    approver = gateway.make_user(groups=("leads",))
    refused = gateway.run_ssh(approver, "admin", "access report")
    assert refused.returncode == 1
    assert b"You need the admin or auditor role to read the access report" in refused.stderr


def test_an_unused_command_is_excessive_and_a_cli_campaign_narrows_the_nhi(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    never = "rm -rf /tmp/pamgate-never"
    workload = register(
        services, tmp_path, commands=("echo machine-ok", "re:cat /etc/host(name|s)", never)
    )
    issue(services, workload)
    for command in ("echo machine-ok", "cat /etc/hostname"):
        ran = machine_ssh(
            gateway, f"{workload.name}:web01", command, key=workload.key, cert=workload.cert
        )
        assert ran.returncode == 0, ran.stderr

    stale = gateway.cli("access", "stale", "--days", "30", "--json")
    assert stale.returncode == 3, stale.stderr  # findings
    mine = [f for f in json_lines(stale.stdout) if f["identity"] == workload.name]
    assert {"kind": "nhi-command", "item": repr(never), "excessive": True}.items() <= next(
        f for f in mine if f["kind"] == "nhi-command" and f["item"] == repr(never)
    ).items()
    suggested = json.loads(gateway.cli("access", "suggest", workload.name, "--json").stdout)
    assert suggested["commands"] == ["echo machine-ok", "cat /etc/hostname"]

    campaign = start_campaign(gateway, (datetime.now(UTC) + timedelta(days=7)).date().isoformat())
    item = item_of(gateway, campaign, workload.name)
    assert "group:auditors" in item["reviewers"]  # type: ignore[operator]
    reviewer = gateway.make_user(groups=("auditors",))

    # Without the reviewer's own sign-in there is no decision; a wrong code changes nothing.
    anonymous = gateway.cli("review", "decide", str(item["id"]), "narrow", "--note", "x")
    assert anonymous.returncode == 2 and "needs --as USER" in anonymous.stderr
    wrong = gateway.cli(
        "review",
        "decide",
        str(item["id"]),
        "narrow",
        "--note",
        "unused",
        "--as",
        reviewer.name,
        "--password-stdin",
        "--totp",
        "000000",
        input_text=f"{reviewer.password}\n",
    )
    assert wrong.returncode == 1, wrong.stdout
    assert services.machines.get(workload.name).commands[-1] == never
    assert item_of(gateway, campaign, workload.name)["status"] == "pending"

    decided = gateway.cli(
        "review",
        "decide",
        str(item["id"]),
        "narrow",
        "--note",
        "rm was never used",
        "--as",
        reviewer.name,
        "--password-stdin",
        "--totp",
        pyotp.TOTP(reviewer.totp_secret).now(),
        input_text=f"{reviewer.password}\n",
    )
    assert decided.returncode == 0, decided.stderr
    refused = machine_ssh(
        gateway, f"{workload.name}:web01", "cat /etc/hosts", key=workload.key, cert=workload.cert
    )
    assert refused.returncode != 0 and b"hostname" not in refused.stdout
    allowed = machine_ssh(
        gateway, f"{workload.name}:web01", "cat /etc/hostname", key=workload.key, cert=workload.cert
    )
    assert allowed.returncode == 0, allowed.stderr

    [decision] = trail_events(gateway, Trail.MACHINE, reviewer.name, "review.decided")
    assert decision.target == f"nhi:{workload.name}" and decision.reason == "rm was never used"
    assert json.loads(decision.details)["decision"] == "narrow"
    assert trail_events(gateway, Trail.MACHINE, reviewer.name, "machine.scope_narrowed")
    assert not [e for e in gateway.audit.events(Trail.HUMAN) if e.action == "review.decided"]
    evidence = gateway.cli("review", "report", str(campaign), "--json")
    entry = next(i for i in json_lines(evidence.stdout) if i["identity"] == workload.name)
    assert entry["decided_by"] == reviewer.name and entry["decision"] == "narrow"
    assert entry["evidence"]["suggestion"]["commands"] == ["echo machine-ok", "cat /etc/hostname"]  # type: ignore[index]


def test_an_overdue_item_suspends_its_nhi_and_is_announced(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    workload = register(services, tmp_path)
    issue(services, workload)
    due = datetime.now(UTC) + timedelta(seconds=20)  # the CLI takes seconds to start here
    campaign = start_campaign(gateway, due.strftime("%Y-%m-%dT%H:%M:%S"))
    early = gateway.cli("review", "escalate")
    assert early.returncode == 0 and "no overdue review items" in early.stdout
    time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()) + 1.1)
    escalated = gateway.cli("review", "escalate")
    assert escalated.returncode == 0, escalated.stderr
    assert f"(machine {workload.name}) escalated" in escalated.stdout
    refused = machine_ssh(
        gateway, f"{workload.name}:web01", "echo machine-ok", key=workload.key, cert=workload.cert
    )
    assert refused.returncode != 0
    assert services.machines.get(workload.name).status == "suspended"
    [event] = [
        e
        for e in gateway.audit.events(Trail.MACHINE)
        if e.action == "review.escalated" and e.target == f"nhi:{workload.name}"
    ]
    assert json.loads(event.details)["campaign"] == campaign
    suspended = trail_events(
        gateway, Trail.MACHINE, "gateway:review-escalation", "machine.suspended"
    )
    assert any(e.target == f"nhi:{workload.name}" for e in suspended)
    # The CLI queued the webhook; the running gateway's delivery worker posts it.
    deadline = time.monotonic() + 20
    while not (announced := [h for h in RECEIVED if h.get("identity") == workload.name]):
        assert time.monotonic() < deadline, "the review.overdue webhook never arrived"
        time.sleep(0.1)
    assert announced and announced[0]["kind"] == "review.overdue" and announced[0]["suspended"]
    assert item_of(gateway, campaign, workload.name)["status"] == "escalated"


def test_over_ssh_a_reviewer_decides_as_themselves_and_never_about_themselves(
    gateway: Gateway,
) -> None:
    carol = gateway.make_user(groups=("auditors",))
    dave = gateway.make_user(groups=("admins",))
    due = (datetime.now(UTC) + timedelta(days=3)).date().isoformat()
    started = gateway.cli("review", "start", "--of", "humans", "--due", due)
    assert started.returncode == 0, started.stderr
    campaign = int(re.search(r"#(\d+)", started.stdout).group(1))  # type: ignore[union-attr]
    items = {
        i["identity"]: i
        for i in json_lines(gateway.cli("review", "list", str(campaign), "--json").stdout)
    }
    own = gateway.run_ssh(carol, "admin", f"review decide {items[carol.name]['id']} keep --note ok")
    assert own.returncode == 1 and b"is about you" in own.stderr
    other = gateway.run_ssh(
        carol,
        "admin",
        f"review decide {items[dave.name]['id']} keep --note 'still on call'",
        code=next_code(carol),
    )
    assert other.returncode == 0, other.stderr
    [decision] = trail_events(gateway, Trail.HUMAN, carol.name, "review.decided")
    assert decision.target == dave.name and json.loads(decision.details)["via_session"]
    [refusal] = trail_events(gateway, Trail.HUMAN, carol.name, "review.refused")
    assert refusal.target == carol.name


def test_the_documented_review_round_runs_verbatim(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    readme = page("concepts/access-review.md")
    block = readme.split("<!-- entitlement-review -->")[1].split("<!-- /entitlement-review -->")[0]
    script = block.split("```sh\n", 1)[1].split("```", 1)[0]
    workload = register(services, tmp_path, commands=("tar -czf - /etc", "re:.*"))
    cli = f'"{sys.executable}" -m gateway.cli --config "{gateway.config_path}"'
    prelude = f'pamgate() {{ {cli} "$@"; }}\n'
    env = {**os.environ, "NHI": workload.name,
           "DUE": (datetime.now(UTC) + timedelta(days=7)).date().isoformat()}  # fmt: skip
    ran = subprocess.run(["bash", "-c", prelude + script], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert ran.returncode == 0, (ran.stdout, ran.stderr)
    assert f"nhi-scope  nhi:{workload.name}" in ran.stdout
    assert "used nothing in that time: suspend or offboard it" in ran.stdout
    assert re.search(r"review campaign #\d+ of machines: \d+ items", ran.stdout)
    assert (tmp_path / "access.csv").read_text().startswith("identity_type,identity,target,")
