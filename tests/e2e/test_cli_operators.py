"""Who a ``pamgate`` command acts as, run as a real subprocess: the operator the gateway
names in ``PAMGATE_OPERATOR`` (as it will for ``ssh bob:admin@gw COMMAND``), the user
``--as`` signs in, or the local administrator; and ``--json`` for scripts."""

from __future__ import annotations

import getpass
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from gateway.config import load_config
from gateway.domain.audit.trail import AuditRecord, Trail
from gateway.domain.machines.registry import ScopeTarget
from gateway.domain.sessions import SessionEnd, SessionLedger, SessionStart
from gateway.services import GatewayServices
from recordings.asciicast import seal_file
from tests.support.gateway import run_cli

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFmTjzR9GHjvjKJTd3OAMN9YLhGXgOG7r3DujrQ3pqVP"
RULES = f"""
[[targets]]
name = "web01"
host = "10.0.0.1"
accounts = ["root"]
host_keys = ["{HOST_KEY}"]

[[rules]]
id = "ops-web01"
groups = ["ops"]
targets = ["web01"]
mode = "approval"
approver_groups = ["approvers"]
break_glass = true
"""
#: Who is who: one person per role, a requester, someone with no role.
PEOPLE = {
    "alice": ("ops",), "bob": ("approvers",), "ann": ("auditors",), "dave": ("pamgate-admins",),
    "carol": (), "dora": ("approvers",), "erin": ("ops",),
}  # fmt: skip
SESSION_ID = "5e55" + "0" * 28


@dataclass
class Site:
    """An initialised gateway directory (no gateway process: the CLI needs none)."""

    config: Path

    def cli(self, *args: str, input_text: str | None = None) -> CompletedProcess[str]:
        """``pamgate`` run by the local administrator."""
        return run_cli("--config", str(self.config), *args, input_text=input_text)

    def as_operator(self, name: str, *args: str, session: str | None = None,
                    input_text: str | None = None) -> CompletedProcess[str]:  # fmt: skip
        """``pamgate`` run by the gateway for operator ``name`` (no --config given)."""
        env = {"PAMGATE_OPERATOR": name, "PAMGATE_CONFIG": str(self.config)}
        if session is not None:
            env["PAMGATE_OPERATOR_SESSION"] = session
        return run_cli(*args, input_text=input_text, env=env)

    def services(self) -> GatewayServices:
        return GatewayServices.open(load_config(self.config))

    def events(self, trail: Trail = Trail.HUMAN) -> list[AuditRecord]:
        services = self.services()
        try:
            return list(services.audit.events(trail))
        finally:
            services.close()

    def open_request(self, user: str = "alice") -> int:
        services = self.services()
        try:
            return services.requests.create(
                user=user, target="web01", account="root", rule=services.config.rules[0],
                reason="rotate the backup key", source="10.0.0.1",
            ).id  # fmt: skip
        finally:
            services.close()

    def request_status(self, request_id: int) -> str:
        services = self.services()
        try:
            return services.requests.get(request_id).status
        finally:
            services.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    config = tmp_path_factory.mktemp("operators") / "gw" / "pamgate.toml"
    assert run_cli("--config", str(config), "init").returncode == 0
    with config.open("a") as appended:
        appended.write(RULES)
    services = GatewayServices.open(load_config(config))
    try:
        for name, groups in PEOPLE.items():
            services.users.add_user(name, actor="tests", groups=groups, password=f"pw-{name}-long")
        services.machines.add(
            "svc-backup", actor="tests", kind="service-account", owner="Data team",
            tech_owner="ops@example.net", purpose="nightly backup",
            targets=[ScopeTarget("web01", "root")], commands=["uptime", "re:tar .*"],
        )  # fmt: skip
        record_session(services, SESSION_ID, "alice", ["ls /etc", "uptime"])
    finally:
        services.close()
    yield Site(config)


def record_session(
    services: GatewayServices, session_id: str, user: str, commands: list[str],
    *, final_pass: bool = True,
) -> None:
    """A sealed shell recording typing ``commands``, in the ledger and indexed (by a live
    pass only, as if the final one had not run yet, unless ``final_pass``)."""
    started = datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)
    relative = f"2026/03/14/{session_id}.cast"
    path = services.config.recordings_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    lines: list[object] = [{"version": 2, "width": 80, "height": 24,
                            "timestamp": int(started.timestamp()),
                            "pamgate": {"kind": "shell", "pty": True}},
                           [0.1, "o", "$ "]]  # fmt: skip
    for number, command in enumerate(commands, 1):
        lines += [[number, "i", command + "\r"], [number + 0.01, "o", command + "\r\n$ "]]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    sealed = seal_file(path)
    ledger = SessionLedger(services.store, services.audit, "cli-test", clock=started.timestamp)
    start = SessionStart(lane="human", user=user, target="web01", account="root",
                         source="192.0.2.7", authority="grant:1", kind="shell")  # fmt: skip
    ledger.open(session_id, start, recording_path=relative)
    ledger.close(session_id, start, SessionEnd(status="closed", recording_path=relative,
                                               recording_sha256=sealed.sha256))  # fmt: skip
    services.recordings.index_commands(session_id, live=not final_pass)


def local_admin() -> str:
    return f"local-admin:{getpass.getuser()}@{socket.gethostname()}"


# -- PAMGATE_OPERATOR -------------------------------------------------------------------


def test_the_named_operator_approves_without_signing_in_and_the_trail_names_them(
    site: Site,
) -> None:
    request_id = site.open_request()
    approved = site.as_operator(
        "bob", "request", "approve", str(request_id), "--comment", "go", session="sess-42"
    )
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.startswith(f"request #{request_id} approved: grant #")
    assert site.request_status(request_id) == "approved"
    events = site.events()
    decision = [e for e in events if e.action == "request.approved"][-1]
    assert decision.actor == "bob" and decision.authority == "policy:ops-web01"
    assert json.loads(decision.details)["via_session"] == "sess-42"
    granted = [e for e in events if e.action == "grant.created"][-1]
    assert granted.actor == "bob" and json.loads(granted.details)["via_session"] == "sess-42"
    # No password, no code: the SSH login was the second factor.
    assert not [e for e in events if e.action.startswith("auth.") and e.actor == "bob"]

    denied_request = site.open_request("erin")
    denied = site.as_operator("bob", "request", "deny", str(denied_request), "--comment", "no")
    assert denied.returncode == 0, denied.stderr
    decision = [e for e in site.events() if e.action == "request.denied"][-1]
    assert decision.actor == "bob" and "via_session" not in json.loads(decision.details)


def test_an_operator_without_the_role_is_refused_naming_it_and_nothing_changes(
    site: Site,
) -> None:
    request_id = site.open_request()
    refused = site.as_operator("carol", "request", "approve", str(request_id), session="s-9")
    assert refused.returncode == 1 and refused.stdout == ""
    assert "You need the approver role to approve requests" in refused.stderr
    assert site.request_status(request_id) == "pending"
    disable = site.as_operator("carol", "user", "disable", "alice")
    assert disable.returncode == 1 and "You need the admin role to disable" in disable.stderr
    listing = site.as_operator("carol", "user", "list")
    assert listing.returncode == 1 and "admin or auditor role to see identities" in listing.stderr
    events = site.events()
    assert not [e for e in events if e.action == "user.disabled" and e.target == "user:alice"]
    refusals = [e for e in events if e.action == "operator.refused" and e.actor == "carol"]
    assert [json.loads(e.details)["attempted"] for e in refusals] == [
        "approve requests", "disable or enable users"
    ]  # fmt: skip
    assert json.loads(refusals[0].details)["via_session"] == "s-9"
    # An approver cannot read the trails either.
    trails = site.as_operator("bob", "audit", "tail")
    assert trails.returncode == 1 and "admin or auditor role to read the audit" in trails.stderr


def test_the_named_operator_cannot_run_host_commands_or_sign_in_as_someone(
    site: Site, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "new" / "pamgate.toml"
    for command in (("init",), ("db", "upgrade"), ("ca", "show", "upstream"), ("status",),
                    ("check-config",), ("serve",), ("console",)):  # fmt: skip
        refused = site.as_operator("dave", "--config", str(elsewhere), *command)
        assert refused.returncode == 2, (command, refused.stderr)
        assert f"'pamgate {command[0]}' works on the gateway host itself" in refused.stderr
        assert refused.stdout == ""
    assert not elsewhere.parent.exists()
    request_id = site.open_request()
    for options in (("--as", "dora"), ("--totp", "123456"), ("--password-stdin",)):
        signed = site.as_operator("bob", "request", "approve", str(request_id), *options,
                                  input_text="pw-dora-long\n")  # fmt: skip
        assert signed.returncode == 2 and f"{options[0]} cannot be used here" in signed.stderr
    review = site.as_operator("bob", "breakglass", "review", "1", "--verdict", "justified",
                              "--note", "fine", "--as", "dora")  # fmt: skip
    assert review.returncode == 2 and "--as cannot be used here" in review.stderr
    assert site.request_status(request_id) == "pending"
    malformed = run_cli("user", "list", env={"PAMGATE_OPERATOR": "bob smith",
                                             "PAMGATE_CONFIG": str(site.config)})  # fmt: skip
    assert malformed.returncode == 2 and "is not a pamgate user name" in malformed.stderr


def test_a_disabled_or_unknown_operator_is_refused(site: Site) -> None:
    request_id = site.open_request()
    assert site.cli("user", "disable", "dora").returncode == 0
    try:
        refused = site.as_operator("dora", "request", "approve", str(request_id))
        assert refused.returncode == 1
        assert "PAMGATE_OPERATOR=dora: dora was disabled" in refused.stderr
        assert site.request_status(request_id) == "pending"
    finally:
        assert site.cli("user", "enable", "dora").returncode == 0
    unknown = site.as_operator("mallory", "request", "list")
    assert unknown.returncode == 1
    assert "PAMGATE_OPERATOR=mallory: there is no pamgate user named 'mallory'" in unknown.stderr


def test_the_gateway_config_wins_over_config_and_host_files_are_out_of_reach(
    site: Site, tmp_path: Path
) -> None:
    listing = site.as_operator("dave", "--config", str(tmp_path / "other.toml"), "user", "list")
    assert listing.returncode == 0, listing.stderr
    assert "alice" in listing.stdout and "--config is ignored" in listing.stderr
    target = tmp_path / "trail.jsonl"
    to_file = site.as_operator("ann", "audit", "export", "--trail", "human", "-o", str(target))
    assert to_file.returncode == 2
    assert "files on the gateway host are out of reach" in to_file.stderr
    assert not target.exists()
    reading = site.as_operator("dave", "user", "add-key", "alice", "/etc/hostname")
    assert reading.returncode == 2 and "out of reach" in reading.stderr
    exported = site.as_operator("ann", "audit", "export", "--trail", "human", "-o", "-")
    assert exported.returncode == 0, exported.stderr
    assert [json.loads(line)["trail"] for line in exported.stdout.splitlines()][:1] == ["human"]


def test_evidence_over_stdout_is_audited_with_the_operator(site: Site) -> None:
    cast = site.as_operator("ann", "recordings", "export", SESSION_ID[:8], "-o", "-",
                            session="sess-7")  # fmt: skip
    assert cast.returncode == 0, cast.stderr
    header, *events = [json.loads(line) for line in cast.stdout.splitlines()]
    typed = [event[2] for event in events if event[1] == "i"]
    assert header["version"] == 2 and typed == ["ls /etc\r", "uptime\r"]
    replayed = site.as_operator("dave", "replay", SESSION_ID)
    assert replayed.returncode == 0 and "uptime" in replayed.stdout
    opened = [(e.action, e.actor, e.authority, json.loads(e.details).get("via_session"))
              for e in site.events() if e.action.startswith("recording.")]  # fmt: skip
    assert ("recording.exported", "ann", "role:auditor", "sess-7") in opened
    assert ("recording.replayed", "dave", "role:admin", None) in opened
    signed = site.as_operator("ann", "audit", "checkpoint")
    assert signed.returncode == 0, signed.stderr
    checkpoints = (site.config.parent / "audit" / "checkpoints.jsonl").read_text()
    verified = site.as_operator("ann", "audit", "verify", "--checkpoints", "-",
                                input_text=checkpoints)  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    assert ": all agree" in verified.stdout and "signed checkpoints (nodes " in verified.stdout


# -- the local administrator -----------------------------------------------------------


def test_local_commands_are_recorded_as_the_local_administrator(site: Site) -> None:
    regrouped = site.cli("user", "set-groups", "erin", "--group", "ops", "--group", "night")
    assert regrouped.returncode == 0, regrouped.stderr
    assert site.cli("machine", "suspend", "svc-backup", "--reason", "audit").returncode == 0
    assert site.cli("machine", "resume", "svc-backup").returncode == 0
    human = [e for e in site.events() if e.action == "user.groups_set"][-1]
    machine = [e for e in site.events(Trail.MACHINE) if e.action == "machine.suspended"][-1]
    for event in (human, machine):
        assert (event.actor, event.actor_type, event.authority) == (
            local_admin(), "admin", "local-admin"
        )  # fmt: skip
    # --as still signs the approver in, as before; the local administrator cannot decide.
    request_id = site.open_request()
    unsigned = site.cli("request", "approve", str(request_id))
    assert unsigned.returncode == 2 and "needs --as USER" in unsigned.stderr
    assert site.request_status(request_id) == "pending"


# -- --json ------------------------------------------------------------------------------


def table(output: str) -> dict[str, list[str]]:
    """A table printed by the CLI, by its first column."""
    return {line.split()[0]: line.split() for line in output.splitlines()}


def json_lines(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines()]


def test_json_listings_carry_the_facts_of_the_tables(site: Site) -> None:
    granted = site.open_request()
    assert site.as_operator("bob", "request", "approve", str(granted)).returncode == 0
    users = json_lines(site.cli("user", "list", "--json").stdout)
    rows = table(site.cli("user", "list").stdout)
    assert [u["name"] for u in users] == sorted(PEOPLE)
    for user in users:
        row = rows[str(user["name"])]
        assert row[1] == user["status"] and row[2] == "+".join(user["factors"])  # type: ignore[arg-type]
        assert " ".join(row[3:]) == ", ".join(user["groups"])  # type: ignore[arg-type]

    request_id = site.open_request("erin")
    requests = json_lines(site.as_operator("bob", "request", "list", "--all", "--json").stdout)
    rows = table(site.cli("request", "list", "--all").stdout)
    assert len(requests) == len(rows)
    mine = next(r for r in requests if r["id"] == request_id)
    assert (mine["status"], mine["user"], mine["target"], mine["account"], mine["reason"]) == (
        "pending", "erin", "web01", "root", "rotate the backup key"
    )  # fmt: skip
    assert rows[f"#{request_id}"][1:4] == ["pending", "erin", "root@web01"]

    grants = json_lines(site.cli("grant", "list", "--json").stdout)
    rows = table(site.cli("grant", "list").stdout)
    assert grants and {f"#{g['id']}" for g in grants} == set(rows)
    for grant in grants:
        assert rows[f"#{grant['id']}"][1:3] == [grant["user"], f"{grant['account']}@web01"]
        assert grant["authority"] == f"grant:{grant['id']}"

    machines = json_lines(site.as_operator("ann", "machine", "list", "--json").stdout)
    assert [(m["name"], m["kind"], m["status"], m["owner"], m["certificates"])
            for m in machines] == [
        ("svc-backup", "service-account", "active", "Data team", 0)
    ]  # fmt: skip
    shown = json.loads(site.cli("machine", "show", "svc-backup", "--json").stdout)
    assert shown["targets"] == [{"target": "web01", "account": "root"}]
    assert shown["commands"] == ["uptime", "re:tar .*"] and shown["outstanding"] == []
    assert shown["purpose"] == "nightly backup" and shown["sources"] == []

    recorded = json_lines(site.cli("recordings", "list", "--json").stdout)
    assert [(r["session"], r["user"], r["sealed"], r["started_at"]) for r in recorded] == [
        (SESSION_ID, "alice", True, "2026-03-14T09:26:53Z")
    ]  # fmt: skip
    assert table(site.cli("recordings", "list").stdout)[SESSION_ID[:12]][3] == "alice"
    commands = json_lines(site.cli("recordings", "commands", SESSION_ID, "--json").stdout)
    assert [(c["text"], c["final"]) for c in commands] == [("ls /etc", True), ("uptime", True)]
    hits = json_lines(site.cli("recordings", "search", "UPTIME", "--json").stdout)
    assert [(h["session"], h["text"], h["where"]) for h in hits] == [
        (SESSION_ID, "uptime", "root@web01")
    ]  # fmt: skip
    nothing = site.cli("recordings", "search", "no-such-command", "--json")
    assert (nothing.returncode, nothing.stdout) == (1, "")

    tail = json_lines(site.cli("audit", "tail", "-n", "3", "--json").stdout)
    plain = site.cli("audit", "tail", "-n", "3").stdout.splitlines()
    assert [f"#{event['seq']}" for event in tail] == [line.split()[0] for line in plain]
    assert [event["action"] for event in tail] == [line.split()[2] for line in plain]


def test_json_breakglass_cases(site: Site) -> None:
    services = site.services()
    try:
        services.breakglass.invoke(
            user="erin", target="web01", account="root", rule=services.config.rules[0],
            justification="database down, pager INC-7 says restart now", source="10.0.0.1",
        )  # fmt: skip
    finally:
        services.close()
    cases = json_lines(site.as_operator("ann", "breakglass", "list", "--json").stdout)
    rows = table(site.cli("breakglass", "list").stdout)
    assert cases and {f"#{c['id']}" for c in cases} == set(rows)
    case = cases[0]
    assert (case["user"], case["verdict"], case["overdue"]) == ("erin", None, False)
    assert case["justification"] == "database down, pager INC-7 says restart now"
    assert rows[f"#{case['id']}"][3:5] == ["erin", "root@web01"]


def test_a_command_log_before_its_final_pass_says_it_is_what_was_found_so_far(
    site: Site,
) -> None:
    """Live passes store a session's commands while it runs; the final pass, just after
    it ends, stores the definitive log. Until then (or if it failed) a reader is told."""
    session_id = "f1a1" + "0" * 28
    services = site.services()
    try:
        record_session(services, session_id, "alice", ["id", "uptime"], final_pass=False)
        assert not services.recordings.info(session_id).commands_final
    finally:
        services.close()
    shown = site.cli("recordings", "commands", session_id)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("(commands so far: the final pass over the recording has not")
    assert [line.split()[-1] for line in lines[1:]] == ["id", "uptime"]
    as_json = json_lines(site.cli("recordings", "commands", session_id, "--json").stdout)
    assert [(c["text"], c["final"]) for c in as_json] == [("id", False), ("uptime", False)]

    services = site.services()
    try:
        services.recordings.index_commands(session_id)
        assert services.recordings.info(session_id).commands_final
    finally:
        services.close()
    lines = site.cli("recordings", "commands", session_id).stdout.splitlines()
    assert [line.split()[-1] for line in lines] == ["id", "uptime"]
