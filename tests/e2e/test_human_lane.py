"""End to end: stock ssh → pamgate human lane → stock sshd, on loopback."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pexpect
import pyotp
import pytest

from gateway.domain.audit.trail import AuditRecord, Trail
from recordings.asciicast import file_sha256
from tests.support.gateway import Gateway, current_code, set_prompt, spawn_shell, wait_for_log

pytestmark = pytest.mark.openssh


def events(gateway: Gateway, name: str) -> list[dict[str, object]]:
    """The human audit trail's events called ``name``, flattened for easy checks."""
    found = []
    for record in gateway.audit.events(Trail.HUMAN):
        if record.action == name:
            found.append(
                {
                    **json.loads(record.details),
                    "event": record.action,
                    "user": record.actor,
                    "actor": record.actor,
                    "outcome": record.outcome,
                    "target": record.target,
                    "account": record.account,
                    "session": record.session_id,
                    "source": record.source,
                    "reason": record.reason,
                    "authority": record.authority,
                }
            )
    return found


def poll_refusals(gateway: Gateway, user: str, wanted: set[str], timeout: float = 5) -> bool:
    """Wait until the log has refusal events of every kind in ``wanted`` for ``user``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kinds = {e["kind"] for e in events(gateway, "channel.refused") if e["user"] == user}
        if wanted <= kinds:
            return True
        time.sleep(0.05)
    return False


# -- authentication ----------------------------------------------------------


def test_password_and_totp_login_runs_command_on_target(gateway: Gateway, tmp_path: Path) -> None:
    user = gateway.make_user()
    prompts = tmp_path / "prompts"
    result = gateway.run_ssh(user, "web01", "id -un", log=prompts)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"root\n"
    assert prompts.read_text().splitlines() == ["Password:", "Verification code:"]
    success = [e for e in events(gateway, "auth.success") if e["user"] == user.name]
    assert success and success[0]["method"] == "password+totp"


def test_key_then_totp_uses_partial_success(gateway: Gateway, tmp_path: Path) -> None:
    user = gateway.make_user(password=False, key=True)
    prompts = tmp_path / "prompts"
    result = gateway.run_ssh(
        user, "web01", "echo via-key", use_key=True, log=prompts, extra=("-v",)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"via-key\n"
    # Only the second factor is asked for, after OpenSSH saw partial success.
    assert prompts.read_text().splitlines() == ["Verification code:"]
    assert b'Authenticated using "publickey" with partial success' in result.stderr
    success = [e for e in events(gateway, "auth.success") if e["user"] == user.name]
    assert success[0]["method"] == "publickey+totp"


def test_key_alone_is_not_enough(gateway: Gateway) -> None:
    user = gateway.make_user(password=False, key=True)
    result = gateway.run_ssh(user, "web01", "true", use_key=True, code="000000")
    assert result.returncode == 255
    assert b"Permission denied" in result.stderr


def test_wrong_code_is_refused(gateway: Gateway) -> None:
    user = gateway.make_user()
    wrong = f"{(int(current_code(user)) + 1) % 1_000_000:06d}"
    result = gateway.run_ssh(user, "web01", "true", code=wrong, source="127.0.0.2")
    assert result.returncode == 255
    assert b"Permission denied" in result.stderr
    assert result.stdout == b""


def test_replayed_code_is_refused(gateway: Gateway) -> None:
    user = gateway.make_user()
    code = current_code(user)
    first = gateway.run_ssh(user, "web01", "true", code=code, source="127.0.0.3")
    assert first.returncode == 0, first.stderr
    replay = gateway.run_ssh(user, "web01", "true", code=code, source="127.0.0.3")
    assert replay.returncode == 255
    assert b"Permission denied" in replay.stderr
    failures = [e for e in events(gateway, "auth.failure") if e["user"] == user.name]
    assert failures and "reused" in str(failures[-1]["reason"])


def test_wrong_password_asks_for_code_then_fails(gateway: Gateway, tmp_path: Path) -> None:
    user = gateway.make_user()
    prompts = tmp_path / "prompts"
    result = gateway.run_ssh(
        user, "web01", "true", password="not-the-password", log=prompts, source="127.0.0.4"
    )
    assert result.returncode == 255
    # The client cannot tell which factor was wrong.
    assert prompts.read_text().splitlines() == ["Password:", "Verification code:"]


def test_unknown_user_fails_like_a_wrong_password(gateway: Gateway, tmp_path: Path) -> None:
    known = gateway.make_user()
    ghost = gateway.make_user()
    ghost.name = "nobody_here"
    outcomes = []
    for user, password in ((known, "wrong-password"), (ghost, "wrong-password")):
        prompts = tmp_path / f"prompts-{user.name}"
        result = gateway.run_ssh(
            user, "web01", "true", password=password, log=prompts, source="127.0.0.6"
        )
        outcomes.append((result.returncode, result.stdout, prompts.read_text()))
        assert b"Permission denied" in result.stderr
    assert outcomes[0] == outcomes[1]


def test_backoff_after_repeated_failures_from_one_address(gateway: Gateway) -> None:
    user = gateway.make_user()
    for _ in range(3):  # user_source_failures = 3 in the test config
        failed = gateway.run_ssh(user, "web01", "true", password="bad-password", source="127.0.0.7")
        assert failed.returncode == 255
    # The right password and code are refused from that address while it backs off ...
    held = gateway.run_ssh(user, "web01", "true", source="127.0.0.7")
    assert held.returncode == 255
    assert b"too many failed logins" in held.stderr
    backoffs = [e for e in events(gateway, "auth.backoff") if e["user"] == user.name]
    assert backoffs and backoffs[0]["scope"] == "pair" and backoffs[0]["source"] == "127.0.0.7"
    # ... but not from another: failures at one address never hold a user back elsewhere.
    assert gateway.run_ssh(user, "web01", "true", source="127.0.0.8").returncode == 0
    # An administrator can lift it.
    unlock = gateway.cli("user", "unlock", user.name)
    assert unlock.returncode == 0, unlock.stderr
    # This step's code was used above: the next step's (within the one-step skew).
    next_code = pyotp.TOTP(user.totp_secret).at(time.time() + 30)
    again = gateway.run_ssh(user, "web01", "true", code=next_code, source="127.0.0.7")
    assert again.returncode == 0, again.stderr


def test_disabled_user_cannot_log_in(gateway: Gateway) -> None:
    user = gateway.make_user()
    result = gateway.cli("user", "disable", user.name)
    assert result.returncode == 0, result.stderr
    refused = gateway.run_ssh(user, "web01", "true", source="127.0.0.9")
    assert refused.returncode == 255
    assert b"Permission denied" in refused.stderr


# -- destinations --------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="sshd can switch to another account only as root")
def test_account_is_picked_from_the_login_name(gateway: Gateway) -> None:
    user = gateway.make_user()
    result = gateway.run_ssh(user, "nobody@web01", "id -un")
    # sshd logged in as 'nobody' (the certificate's only principal), whose
    # shell is nologin: that message proves which account was used.
    assert b"This account is currently not available." in result.stdout
    assert result.returncode == 1


@pytest.mark.parametrize(
    ("destination", "message"),
    [
        ("nosuch", b"unknown target 'nosuch'"),
        ("daemon@web01", b"account 'daemon' is not available on 'web01'"),
        ("bad$target", b"invalid target 'bad$target'"),
    ],
)
def test_bad_destinations_get_a_clear_message(
    gateway: Gateway, destination: str, message: bytes
) -> None:
    user = gateway.make_user()
    result = gateway.run_ssh(user, destination, "true")
    assert result.returncode == 255
    assert message in result.stderr


def test_target_not_in_users_groups_is_refused(gateway: Gateway) -> None:
    user = gateway.make_user(groups=("visitors",))
    result = gateway.run_ssh(user, "web01", "true")
    assert result.returncode == 255
    assert b"you are not permitted to reach root@web01 (no rule lets" in result.stderr


def test_exec_without_target_lists_reachable_targets(gateway: Gateway) -> None:
    user = gateway.make_user()
    result = gateway.run_ssh(user, None, "true")
    assert result.returncode == 255
    assert b"no target given" in result.stderr
    assert b"web01" in result.stderr


# -- the relay -------------------------------------------------------------------


def test_exec_keeps_stdout_stderr_and_exit_status(gateway: Gateway) -> None:
    user = gateway.make_user()
    result = gateway.run_ssh(user, "web01", "echo out; echo err >&2; exit 7")
    assert result.returncode == 7
    assert result.stdout == b"out\n"
    assert result.stderr.endswith(b"err\n")
    ended = wait_for_log(gateway, '"exit_status": 7')
    assert '"event": "session.end"' in ended


def test_stdin_and_eof_are_relayed(gateway: Gateway) -> None:
    user = gateway.make_user()
    payload = os.urandom(300_000)
    result = gateway.run_ssh(user, "web01", "sha256sum", input_bytes=payload)
    assert result.returncode == 0, result.stderr
    import hashlib

    assert result.stdout.split()[0].decode() == hashlib.sha256(payload).hexdigest()


@pytest.mark.parametrize(
    "cipher",
    ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
     "aes128-ctr"],
)  # fmt: skip
def test_every_offered_cipher_relays_megabytes_both_ways_intact(
    gateway: Gateway, cipher: str
) -> None:
    # Enough packets in each direction for the relay's own packet path (gateway.ssh.packet_io,
    # cipher_packets, the direct channel data send) to carry them, checked by the target's
    # sha256sum on the way in and by ours on the way out.
    import hashlib

    user = gateway.make_user()
    payload = os.urandom(3_000_000)
    result = gateway.run_ssh(
        user, "web01", "tee /dev/stderr | sha256sum", input_bytes=payload, extra=("-c", cipher)
    )
    assert result.returncode == 0, result.stderr[-300:]
    assert result.stdout.split()[0].decode() == hashlib.sha256(payload).hexdigest()
    assert result.stderr.endswith(payload)


def test_cbc_ciphers_are_not_offered(gateway: Gateway) -> None:
    # The relay leaves out asyncssh's empty SSH_MSG_IGNORE before each packet, a
    # countermeasure only CBC modes need (see gateway/ssh/server_connection.py).
    user = gateway.make_user()
    result = gateway.run_ssh(user, "web01", "true", extra=("-c", "aes128-cbc"))
    assert result.returncode == 255
    assert b"no matching cipher found" in result.stderr


def test_exit_signal_is_relayed(gateway: Gateway) -> None:
    user = gateway.make_user()
    result = gateway.run_ssh(user, "web01", "kill -TERM $$")
    # OpenSSH's client exits 255 when the remote command died of a signal.
    assert result.returncode == 255
    assert wait_for_log(gateway, '"exit_signal": "TERM"')


def test_environment_is_allow_listed(gateway: Gateway) -> None:
    user = gateway.make_user()
    env_opts = ("-o", "SendEnv=LANG PG_SECRET_VAR", "-o", "SetEnv=LANG=C.UTF-8 PG_SECRET_VAR=leak")
    result = gateway.run_ssh(user, "web01", "echo lang=$LANG secret=$PG_SECRET_VAR", extra=env_opts)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"lang=C.UTF-8 secret=\n"


def test_pty_shell_sees_term_and_size_and_resize(gateway: Gateway) -> None:
    user = gateway.make_user()
    child = spawn_shell(gateway, user, "web01", rows=33, cols=101)
    try:
        set_prompt(child)
        child.sendline("echo term=$TERM; stty size")
        child.expect(r"term=xterm-256color\r\n33 101\r\n")
        child.setwinsize(40, 120)
        time.sleep(0.5)
        child.sendline("stty size")
        child.expect(r"40 120\r\n")
        child.sendline("exit 5")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 5


def test_ctrl_c_interrupts_the_remote_command(gateway: Gateway) -> None:
    user = gateway.make_user()
    child = spawn_shell(gateway, user, "web01")
    try:
        set_prompt(child)
        child.sendline("sleep 30; echo fini''shed")  # the echoed line never says "finished"
        time.sleep(1)
        started = time.monotonic()
        child.sendcontrol("c")
        child.expect("PG> ", timeout=10)
        assert time.monotonic() - started < 10
        assert b"finished" not in child.before
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()


def test_menu_lists_targets_and_connects(gateway: Gateway) -> None:
    user = gateway.make_user()
    child = spawn_shell(gateway, user, "")
    try:
        child.expect("Targets you may reach:")
        child.expect(r"(\d+)\) web01 ")
        number = child.match.group(1).decode()
        child.expect("Target \\(number")
        child.send("9")
        child.send("\x7f")  # backspace erases the 9
        child.send(f"{number}\r")
        set_prompt(child)
        child.sendline("id -un")
        child.expect("root\r\n")
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()


def test_menu_ctrl_c_disconnects(gateway: Gateway) -> None:
    user = gateway.make_user()
    child = spawn_shell(gateway, user, "")
    try:
        child.expect("Target \\(number")
        child.sendcontrol("c")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 255


# -- refusals and failures -------------------------------------------------------


def test_host_key_mismatch_is_refused(gateway: Gateway) -> None:
    user = gateway.make_user()
    result = gateway.run_ssh(user, "badkey", "true")
    assert result.returncode == 255
    assert b"does not match the pinned key" in result.stderr
    mismatches = [
        e for e in events(gateway, "upstream.host_key_mismatch") if e["user"] == user.name
    ]
    assert mismatches and mismatches[0]["target"] == "badkey"


def test_unreachable_target_is_explained(gateway: Gateway) -> None:
    user = gateway.make_user()
    result = gateway.run_ssh(user, "deadport", "true")
    assert result.returncode == 255
    assert b"cannot reach target 'deadport'" in result.stderr


def test_local_forwarding_is_refused(gateway: Gateway) -> None:
    user = gateway.make_user()
    web01 = gateway.targets["web01"]
    result = gateway.run_ssh(user, "web01", None, extra=("-W", f"127.0.0.1:{web01.port}"))
    assert result.returncode == 255
    assert b"administratively prohibited" in result.stderr
    assert b"forwarding is not permitted through pamgate" in result.stderr
    assert poll_refusals(gateway, user.name, {"local-port-forwarding"})


def test_remote_forwarding_is_refused(gateway: Gateway) -> None:
    user = gateway.make_user()
    result = gateway.run_ssh(
        user, "web01", "true", extra=("-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:9")
    )
    assert result.returncode == 255
    assert b"remote port forwarding failed" in result.stderr
    assert poll_refusals(gateway, user.name, {"remote-port-forwarding"})


def test_agent_and_x11_forwarding_are_refused(gateway: Gateway, tmp_path: Path) -> None:
    user = gateway.make_user()
    agent_socket = tmp_path / "agent.sock"
    agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(agent_socket)], stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 5
        while not agent_socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        extra = ("-o", f"IdentityAgent={agent_socket}", "-A", "-o", "ForwardX11=yes")
        command = gateway.ssh_command(f"{user.name}:web01", extra=extra) + ["echo $SSH_AUTH_SOCK"]
        env = gateway.ssh_env(user)
        env["DISPLAY"] = "127.0.0.1:0"
        result = subprocess.run(
            command, env=env, capture_output=True, timeout=30, stdin=subprocess.DEVNULL
        )
    finally:
        agent.terminate()
        agent.wait()
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"\n"  # no forwarded agent socket on the target
    assert poll_refusals(gateway, user.name, {"agent-forwarding", "x11-forwarding"})


def test_target_dying_mid_session_is_explained(gateway: Gateway) -> None:
    user = gateway.make_user()
    process = gateway.start_ssh(user, "mortal", "echo started; sleep 60")
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"started\n"
        gateway.targets["mortal"].kill_everything()
        _, stderr = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 255
    assert b"connection to target lost" in stderr
    # The gateway survives and serves other sessions.
    other = gateway.make_user()
    assert gateway.run_ssh(other, "web01", "true").returncode == 0
    ended = [e for e in events(gateway, "session.end") if e["user"] == user.name]
    assert ended and ended[0]["status"] == "failed"
    # The audit event says why, and what was recorded up to the loss is sealed.
    assert str(ended[0]["reason"]).startswith("connection to target lost")
    sealed = gateway.data_dir / "recordings" / str(ended[0]["recording"])
    assert ended[0]["recording_sha256"] == file_sha256(sealed)


def test_session_is_logged_with_bytes_and_status(gateway: Gateway) -> None:
    user = gateway.make_user()
    result = gateway.run_ssh(user, "web01", "head -c 1000 /dev/zero", input_bytes=b"x" * 10)
    assert result.returncode == 0
    wait_for_log(gateway, f'"user": "{user.name}"')
    deadline = time.monotonic() + 5
    while not [e for e in events(gateway, "session.end") if e["user"] == user.name]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    started = [e for e in events(gateway, "session.start") if e["user"] == user.name][0]
    ended = [e for e in events(gateway, "session.end") if e["user"] == user.name][0]
    assert started["target"] == "web01" and started["account"] == "root"
    assert started["source"] == "127.0.0.1"
    assert started["authority"] == "policy:admins-all"
    assert ended["bytes_from_target"] == 1000
    assert ended["bytes_to_target"] == 10
    assert ended["exit_status"] == 0
    assert re.fullmatch(r"[0-9a-f]{32}", str(ended["session"]))


# -- the human audit trail ---------------------------------------------------------


def test_session_leaves_a_verifiable_trail(gateway: Gateway) -> None:
    user = gateway.make_user()
    assert gateway.run_ssh(user, "web01", "exit 3").returncode == 3
    deadline = time.monotonic() + 5
    while not events(gateway, "session.end") or not [
        e for e in events(gateway, "session.end") if e["user"] == user.name
    ]:
        assert time.monotonic() < deadline
        time.sleep(0.05)

    def mine_now() -> list[AuditRecord]:
        return [
            record
            for record in gateway.audit.events(Trail.HUMAN)
            if record.actor == user.name or record.target == f"user:{user.name}"
        ]

    # The exec command is audited as run once the session's command log is stored.
    while not [r for r in mine_now() if r.action == "command.executed"]:
        assert time.monotonic() < deadline + 10
        time.sleep(0.05)
    mine = mine_now()
    assert [r.action for r in mine] == [
        "user.created",
        "auth.success",
        "session.start",
        "session.end",
        "command.executed",
    ]
    assert json.loads(mine[4].details)["text"] == "exit 3"
    start, end = mine[2], mine[3]
    assert start.session_id == end.session_id and start.authority == "policy:admins-all"
    assert json.loads(end.details)["exit_status"] == 3
    verified = gateway.cli("audit", "verify", "--trail", "human")
    assert verified.returncode == 0, verified.stdout
    assert "human: OK" in verified.stdout


def test_no_audit_no_access(gateway: Gateway) -> None:
    user = gateway.make_user()
    database = gateway.config_path.parent / "data" / "pamgate.db"
    block = (
        "CREATE TRIGGER block_audit BEFORE INSERT ON audit_human "
        "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    )
    connection = sqlite3.connect(database)
    try:
        with connection:
            connection.execute(block)
        refused = gateway.run_ssh(user, "web01", "echo should-not-run", source="127.0.0.10")
    finally:
        with connection:
            connection.execute("DROP TRIGGER block_audit")
        connection.close()
    assert refused.returncode == 255
    assert b"should-not-run" not in refused.stdout
    time.sleep(1)
    later = gateway.make_user()
    assert gateway.run_ssh(later, "web01", "true").returncode == 0  # recovers at once


def test_refused_destinations_are_audited(gateway: Gateway) -> None:
    user = gateway.make_user(groups=("visitors",))
    assert gateway.run_ssh(user, "web01", "true").returncode == 255
    refused = [e for e in events(gateway, "access.refused") if e["user"] == user.name]
    assert refused and refused[0]["target"] == "web01"
    assert "not permitted" in str(refused[0]["reason"])


def test_menu_typo_reprompts_instead_of_disconnecting(gateway: Gateway) -> None:
    user = gateway.make_user()
    child = spawn_shell(gateway, user, "")
    try:
        child.expect("Target \\(number")
        child.send("daemon@web01\r")
        child.expect("account 'daemon' is not available")
        child.expect("Target \\(number")
        child.send("web01\r")
        set_prompt(child)
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()


def test_shutdown_ends_live_sessions_with_a_message(tmp_path: Path) -> None:
    from tests.conftest import launch_gateway

    with launch_gateway(tmp_path) as own:
        user = own.make_user()
        process = own.start_ssh(user, "web01", "echo started; sleep 60")
        try:
            assert process.stdout is not None and process.stdout.readline() == b"started\n"
            own.process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=20)
        finally:
            process.kill()
        assert own.process.wait(timeout=10) == 0
        assert b"the gateway is shutting down" in stderr
        ended = [e for e in events(own, "session.end") if e["user"] == user.name]
        assert ended and ended[0]["status"] == "interrupted"
        verified = own.cli("audit", "verify")
        assert verified.returncode == 0, verified.stdout
