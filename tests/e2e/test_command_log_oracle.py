"""The command log against bash's own history: real keystrokes through the gateway into a real bash.

The target's bash appends every command to HISTFILE as it runs it
(``PROMPT_COMMAND='history -a'``, ``HISTTIMEFORMAT`` so multi-line entries stay
whole). That history is the oracle: the gateway's command log of the session
must list the same commands, in the same order.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from pathlib import Path

import pexpect
import pytest

from gateway.domain.audit.trail import Trail
from gateway.domain.recordings.service import LoggedCommand
from gateway.services import GatewayServices
from recordings.asciicast import iter_events, read_header
from tests.support.gateway import Gateway, spawn_shell

pytestmark = pytest.mark.openssh

PROMPT = "PG> "


def logged_commands(
    services: GatewayServices, session: str, timeout: float = 20
) -> list[LoggedCommand]:
    """The session's command log once the final extraction pass has stored it.

    While a shell session runs, live passes store the commands finished so
    far; just after it ends, the final pass replaces them with the definitive
    log and marks it final. Read in between, the log is a live pass's prefix.
    After ``timeout`` the log is returned as it is, for the caller's assertion
    to show what is missing.
    """
    deadline = time.monotonic() + timeout
    while not services.recordings.info(session).commands_final:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return services.recordings.commands(session)


def session_of(services: GatewayServices, user: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listing = services.recordings.list(user=user)
        if listing and listing[0].status != "live":
            return listing[0].session_id
        time.sleep(0.2)
    raise AssertionError(f"no finished session for {user}")


def bash_history(path: Path) -> list[str]:
    """HISTFILE entries (written with timestamps: ``#EPOCH`` lines separate entries)."""
    entries: list[list[str]] = []
    for line in path.read_text().split("\n"):
        if re.fullmatch(r"#\d+", line):
            entries.append([])
        elif entries:
            entries[-1].append(line)
    return ["\n".join(lines).rstrip("\n") for lines in entries]


def wait_prompt(child: pexpect.spawn, count: int = 1) -> None:
    for _ in range(count):
        child.expect_exact(PROMPT)


def wrap_corpus() -> list[str]:
    """Commands whose spaces and letters fall on every column around the first two wraps."""
    commands = []
    for width in range(66, 84):  # 4 (prompt) + 2 + width crosses column 80 at every position
        commands.append(": " + "w" * width + "  tail-" + str(width))
    for width in range(70, 80):
        commands.append("echo" + " " * width + "spaced-" + str(width))
    # The example: an ordinary command whose wrap column is a space.
    commands.append("tar -czf /tmp/x.tgz /etc/passwd /etc/group /etc/fstab" + " " * 20 + "; :")
    commands.append(": " + "v" * 150 + " long-" + " " * 3 + "second-wrap")
    return commands


def test_command_log_matches_bash_history(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    user = gateway.make_user()
    history = tmp_path / "history"
    child = spawn_shell(gateway, user, "web01", rows=24, cols=80)
    child.delaybeforesend = None
    try:
        # Typed ahead, before the first prompt shows (as Fabric and expect do).
        child.send(f"touch {tmp_path}/typed-ahead\r")
        child.send(
            f"export PS1='PG''> ' HISTFILE={history} HISTTIMEFORMAT=%s "
            "PROMPT_COMMAND='history -a'; set -o history; bind 'set enable-bracketed-paste on'\r"
        )
        child.expect_exact(PROMPT)
        for command in wrap_corpus():
            child.send(command + "\r")
            wait_prompt(child)
        # Several lines in one input event (fast typing, a paste without bracketed paste).
        child.send("echo one-event-a\recho one-event-b\recho one-event-c\r")
        wait_prompt(child, 3)
        # A bracketed paste of two lines, then Enter.
        child.send("\x1b[200~echo pasted-a\recho pasted-b\x1b[201~\r")
        child.expect_exact("pasted-b\r\n")
        wait_prompt(child)
        # Zero-width characters must not cut the line.
        child.send("echo \u2764\ufe0f deployed; echo after-heart\r")
        wait_prompt(child)
        child.send("echo \u3164 filler; echo after-filler\r")
        wait_prompt(child)
        # A continuation, a heredoc and a compound command: one entry each.
        child.send("echo start \\\rcontinued\r")
        wait_prompt(child)
        child.send("cat <<EOF\rheredoc body\rEOF\r")
        wait_prompt(child)
        child.send("for i in 1 2\rdo echo loop-$i\rdone\r")
        wait_prompt(child)
        # History recall, Ctrl-R and tab completion: only the screen knows the result.
        child.send("echo recalled-once\r")
        wait_prompt(child)
        child.send("\x1b[A\r")
        wait_prompt(child)
        child.send("\x12recalled-on\r")
        wait_prompt(child)
        child.send(f"ls {tmp_path}/typed-a\t\r")
        wait_prompt(child)
        # Edits: backspace, cursor-left insert, Ctrl-U.
        child.send("echo edXted\x7f\x7f\x7f\x7fited\r")
        wait_prompt(child)
        child.send("echo wrong\x15echo right\r")
        wait_prompt(child)
        child.send("exit\r")
        child.expect(pexpect.EOF)
    finally:
        child.close()

    session = session_of(services, user.name)
    logged = [c.text for c in logged_commands(services, session)]
    oracle = bash_history(history)
    assert oracle[0] == f"touch {tmp_path}/typed-ahead"  # bash ran the typed-ahead line too
    assert len(oracle) > 40
    # The log trims the space tab completion leaves at the end of a line; bash keeps it.
    expected = [entry.rstrip(" ") for entry in oracle]
    assert expected[-1] == "exit"
    assert logged == expected, "\n".join(map(repr, logged[28:36] + ["--"] + expected[28:36]))


def test_ssh_tt_without_a_terminal_gets_80_columns(
    gateway: Gateway, services: GatewayServices
) -> None:
    """``ssh -tt`` with stdin not a terminal asks for a 0x0 pty (scripts, expect, CI)."""
    user = gateway.make_user()
    command = gateway.ssh_command(f"{user.name}:web01", extra=("-tt",))
    script = b"sleep 1; echo zero-size-$((6*7)); stty size\nexit\n"
    result = subprocess.run(
        command, env=gateway.ssh_env(user), input=script, capture_output=True, timeout=30
    )
    assert b"zero-size-42" in result.stdout, result.stdout + result.stderr
    assert b"24 80" in result.stdout
    session = session_of(services, user.name)
    header = read_header(services.recordings.info(session).path)  # type: ignore[arg-type]
    assert (header["width"], header["height"]) == (80, 24)
    texts = [c.text for c in logged_commands(services, session)]
    assert "sleep 1; echo zero-size-$((6*7)); stty size" in texts


def command_events(gateway: Gateway, session: str) -> list[dict[str, object]]:
    """The ``command.executed`` details of ``session`` in the human trail."""
    return [
        json.loads(record.details)
        for record in gateway.audit.events(Trail.HUMAN)
        if record.action == "command.executed" and record.session_id == session
    ]


def test_shell_without_a_terminal_records_its_input_and_logs_its_lines(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    user = gateway.make_user()
    marker = tmp_path / "no-pty-marker"
    script = f"touch {marker}\necho two \\\nparts\nexit\n".encode()
    result = gateway.run_ssh(user, "web01", extra=("-T",), input_bytes=script)
    assert result.returncode == 0, result.stderr
    assert marker.exists()
    session = session_of(services, user.name)
    path = services.recordings.info(session).path
    assert path is not None
    recorded_input = "".join(e.data for e in iter_events(path) if e.code == "i")
    assert recorded_input == script.decode()
    logged = logged_commands(services, session)
    assert [(c.text, c.source) for c in logged] == [
        (f"touch {marker}", "input"),
        ("echo two parts", "input"),
        ("exit", "input"),
    ]
    # Each command is in the human trail, for a SIEM, with its session, time and source.
    events = command_events(gateway, session)
    assert [(e["text"], e["source"], e["seq"]) for e in events] == [
        (f"touch {marker}", "input", 1),
        ("echo two parts", "input", 2),
        ("exit", "input", 3),
    ]
    assert all(e["at"] for e in events)


def test_exec_stdin_is_kept_to_the_cap_and_digested(
    gateway: Gateway, services: GatewayServices
) -> None:
    user = gateway.make_user()
    script = b"echo from-stdin-script\n" + b"#" * 3_000_000 + b"\n"
    result = gateway.run_ssh(user, "web01", "bash -s", input_bytes=script, timeout=60)
    assert result.returncode == 0, result.stderr
    assert b"from-stdin-script" in result.stdout
    session = session_of(services, user.name)
    end = next(
        json.loads(r.details)
        for r in gateway.audit.events(Trail.HUMAN)
        if r.action == "session.end" and r.session_id == session
    )
    assert end["stdin_bytes"] == len(script)
    assert end["stdin_sha256"] == hashlib.sha256(script).hexdigest()
    assert end["stdin_truncated"] is True
    path = services.recordings.info(session).path
    assert path is not None
    kept = "".join(e.data for e in iter_events(path) if e.code == "i")
    assert kept.startswith("echo from-stdin-script\n")
    assert len(kept.encode()) == end["payload_cap_bytes"]


def test_live_session_commands_are_searchable_and_audited_while_it_runs(
    gateway: Gateway, services: GatewayServices
) -> None:
    user = gateway.make_user()
    child = spawn_shell(gateway, user, "web01")
    try:
        child.sendline("export PS1='PG''> '")
        child.expect_exact(PROMPT)
        child.sendline("echo live-search-marker")
        child.expect_exact(PROMPT)
        deadline = time.monotonic() + 20
        while not services.recordings.search("live-search-marker"):
            assert time.monotonic() < deadline, "a live session's command never became searchable"
            time.sleep(0.3)
        session = services.recordings.search("live-search-marker")[0].session_id
        assert services.ledger.get(session).status == "live"
        # Not final while it runs, and a reader is told so.
        assert not services.recordings.info(session).commands_final
        shown = gateway.cli("recordings", "commands", session).stdout
        assert shown.startswith("(commands so far: the session is live)\n"), shown
        assert [e["text"] for e in command_events(gateway, session)][-1] == (
            "echo live-search-marker"
        )
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    # The final pass neither repeats nor loses the live pass's events.
    deadline = time.monotonic() + 20
    while [e["text"] for e in command_events(gateway, session)][-1:] != ["exit"]:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    texts = [e["text"] for e in command_events(gateway, session)]
    assert texts == ["export PS1='PG''> '", "echo live-search-marker", "exit"]
    assert [c.text for c in logged_commands(services, session)] == texts
    assert services.recordings.info(session).commands_final
    assert "so far" not in gateway.cli("recordings", "commands", session).stdout
