"""Session recordings end to end: real bash through the gateway, asciinema, crashes, full disks."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

from gateway.domain.audit.trail import Trail
from recordings.asciicast import SUFFIXES, iter_events, read_header
from tests.support.gateway import Gateway, launch_gateway, session_end, set_prompt, spawn_shell

pytestmark = pytest.mark.openssh


def asciinema_cat(path: Path) -> tuple[int, bytes]:
    """Run the stock ``asciinema cat`` (it needs a terminal) and return (status, output)."""
    child = pexpect.spawn("asciinema", ["cat", str(path)], timeout=30, dimensions=(50, 200))
    output = child.read()
    child.close()
    return child.exitstatus, output


def recording_of(gateway: Gateway, session: str) -> Path:
    listing = gateway.cli("recordings", "list")
    assert session[:12] in listing.stdout, listing.stdout
    names = {f"{session}{suffix}" for suffix in SUFFIXES}
    matches = [p for p in (gateway.data_dir / "recordings").rglob("*") if p.name in names]
    assert len(matches) == 1, matches
    return matches[0]


def run_shell(gateway: Gateway, user, lines: list[str], *, resize: bool = False) -> None:
    child = spawn_shell(gateway, user, "web01", rows=30, cols=100)
    try:
        set_prompt(child)
        if resize:
            child.setwinsize(35, 110)
            child.sendline("stty size")
            child.expect("35 110")
            child.expect("PG> ")
        for line in lines:
            child.sendline(line)
            child.expect("PG> ")
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()


def test_shell_session_is_recorded_sealed_and_searchable(gateway: Gateway, tmp_path: Path) -> None:
    user = gateway.make_user()
    run_shell(
        gateway,
        user,
        ["echo hello-recording", "ls -d /etc", "sudo -n true 2>/dev/null; echo after"],
        resize=True,
    )
    end = session_end(gateway, user.name)
    path = recording_of(gateway, str(end["session"]))
    # Sealed: read-only, digest in the session's end event and in the database.
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert end["recording_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    verified = gateway.cli("recordings", "verify", str(end["session"]))
    assert verified.returncode == 0 and "OK" in verified.stdout
    # Header carries size, TERM and pamgate metadata; events are o, i and r.
    header = read_header(path)
    assert (header["width"], header["height"], header["env"]["TERM"]) == (100, 30, "xterm-256color")
    assert header["pamgate"]["user"] == user.name and header["pamgate"]["target"] == "web01"
    events = list(iter_events(path))
    assert {"o", "i", "r"} <= {event.code for event in events}
    assert [e.data for e in events if e.code == "r"] == ["110x35"]
    # The stock asciinema reads it.
    status, output = asciinema_cat(path)
    assert status == 0, output
    assert b"hello-recording" in output
    # Commands were extracted and are searchable.
    deadline = time.monotonic() + 10
    while "echo hello-recording" not in gateway.cli("recordings", "search", "hello-rec").stdout:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    commands = gateway.cli("recordings", "commands", str(end["session"])[:10]).stdout
    texts = [line.split("  ", 1)[1] for line in commands.splitlines()]
    assert texts[-4:] == [
        "echo hello-recording",
        "ls -d /etc",
        "sudo -n true 2>/dev/null; echo after",
        "exit",
    ]
    # ... and plays it.
    player = pexpect.spawn("asciinema", ["play", "-s", "20", "-i", "0.1", str(path)], timeout=60)
    player.expect("hello-recording")
    player.expect(pexpect.EOF)
    player.close()
    assert player.exitstatus == 0
    # Export gives a plain asciicast file that asciinema also reads.
    exported = tmp_path / "copy.cast"
    assert (
        gateway.cli("recordings", "export", str(end["session"]), "-o", str(exported)).returncode
        == 0
    )
    assert asciinema_cat(exported)[0] == 0


def test_replay_prints_sanitised_output_without_a_terminal(gateway: Gateway) -> None:
    user = gateway.make_user()
    run_shell(gateway, user, ["printf 'safe\\033]52;c;aGk=\\007text\\n'"])
    end = session_end(gateway, user.name)
    replay = gateway.cli("replay", str(end["session"]))
    assert replay.returncode == 0, replay.stderr
    assert "safetext" in replay.stdout
    assert "\x1b]52" not in replay.stdout


def test_interactive_replay_jumps_to_commands_and_quits(gateway: Gateway) -> None:
    user = gateway.make_user()
    run_shell(gateway, user, ["sleep 2; echo first-marker", "echo second-marker"])
    end = session_end(gateway, user.name)
    time.sleep(1)  # command extraction runs just after the session ends
    child = pexpect.spawn(
        sys.executable, ["-m", "gateway.cli", "--config", str(gateway.config_path), "replay",
                   str(end["session"]), "--speed", "0.05"],
        timeout=20, dimensions=(30, 100),
    )  # fmt: skip
    try:
        child.expect("export PS1")  # playing
        child.send("n")  # jump to the first command
        child.send("n")
        child.send("n")
        child.expect("second-marker")
        child.send("q")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_exec_session_keeps_digests_and_a_capped_payload(gateway: Gateway) -> None:
    user = gateway.make_user()
    result = gateway.run_ssh(user, "web01", "head -c 3000000 /dev/zero; echo oops >&2")
    assert result.returncode == 0 and len(result.stdout) == 3_000_000
    end = session_end(gateway, user.name)
    assert end["stdout_bytes"] == 3_000_000
    assert end["stdout_sha256"] == hashlib.sha256(b"\0" * 3_000_000).hexdigest()
    assert end["stdout_truncated"] is True and end["stderr_bytes"] == 5
    assert end["stderr_sha256"] == hashlib.sha256(b"oops\n").hexdigest()
    path = recording_of(gateway, str(end["session"]))
    kept = sum(len(e.data) for e in iter_events(path) if e.code == "o")
    assert 1024 * 1024 <= kept <= 1024 * 1024 + 5
    assert read_header(path)["pamgate"]["command"].startswith("head -c")


def test_compressed_recordings_read_transparently(tmp_path: Path) -> None:
    with launch_gateway(tmp_path, '\n[recordings]\ncompression = "zstd"\n') as own:
        user = own.make_user()
        assert own.run_ssh(user, "web01", "echo compressed-payload").returncode == 0
        end = session_end(own, user.name)
        path = recording_of(own, str(end["session"]))
        assert path.name.endswith(".cast.zst")
        assert [e.data for e in iter_events(path)] == ["compressed-payload\n"]
        assert own.cli("recordings", "verify", "--all").returncode == 0
        replay = own.cli("replay", str(end["session"]))
        assert "compressed-payload" in replay.stdout


def test_sigkill_leaves_a_readable_recording_and_marks_the_session(tmp_path: Path) -> None:
    with launch_gateway(tmp_path) as own:
        user = own.make_user()
        child = spawn_shell(own, user, "web01")
        try:
            set_prompt(child)
            child.sendline("echo before-the-crash")
            child.expect("PG> ")
            time.sleep(1.5)  # the recording is flushed at least every 0.25 s
            own.process.send_signal(signal.SIGKILL)
            own.process.wait(timeout=10)
            child.expect(pexpect.EOF, timeout=20)
        finally:
            child.close()
        [path] = list((own.data_dir / "recordings").rglob("*.cast"))
        outputs = "".join(e.data for e in iter_events(path) if e.code == "o")
        assert "before-the-crash" in outputs
        status, output = asciinema_cat(path)
        assert status == 0 and b"before-the-crash" in output
        own.restart()
        deadline = time.monotonic() + 10
        while "interrupted" not in own.cli("recordings", "list").stdout:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        while "echo before-the-crash" not in own.cli("recordings", "search", "before-the").stdout:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert own.cli("audit", "verify").returncode == 0
        # Sealed as found by the restarted node: verification passes and says why.
        verified = own.cli("recordings", "verify", "--all")
        assert verified.returncode == 0, verified.stdout
        assert "interrupted: sealed as found after the crash" in verified.stdout
        sealed = [e for e in own.audit.events(Trail.HUMAN) if e.action == "recording.sealed"]
        assert len(sealed) == 1 and json.loads(sealed[0].details)["bytes"] == path.stat().st_size
        later = own.make_user()
        assert own.run_ssh(later, "web01", "true").returncode == 0
        # Tampering after the seal is caught like any other.
        with path.open("a") as recording:
            recording.write('[99.0, "o", "forged"]\n')
        tampered = own.cli("recordings", "verify", "--all")
        assert tampered.returncode == 1 and "FAILED: sha256 is" in tampered.stdout


def mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")


@needs_root
def test_unwritable_recording_storage_refuses_sessions(gateway: Gateway) -> None:
    recordings = gateway.data_dir / "recordings"
    mount_tmpfs(recordings, "ro,size=64k")
    try:
        user = gateway.make_user()
        refused = gateway.run_ssh(user, "web01", "echo must-not-run")
    finally:
        unmount(recordings)
    assert refused.returncode == 255
    assert b"cannot be recorded" in refused.stderr and b"Read-only file system" in refused.stderr
    assert b"must-not-run" not in refused.stdout
    later = gateway.make_user()
    assert gateway.run_ssh(later, "web01", "true").returncode == 0


@needs_root
def test_full_recording_storage_ends_a_live_session(gateway: Gateway) -> None:
    recordings = gateway.data_dir / "recordings"
    mount_tmpfs(recordings, "size=256k")
    try:
        user = gateway.make_user()
        child = spawn_shell(gateway, user, "web01")
        try:
            set_prompt(child)
            child.sendline("head -c 2000000 /dev/zero | od -v | head -c 1500000")
            child.expect("no longer be recorded", timeout=30)
            child.expect(pexpect.EOF, timeout=20)
        finally:
            child.close()
        end = session_end(gateway, user.name)
        assert end["status"] == "interrupted"
        assert "No space left on device" in str(end.get("recording_incomplete"))
        full = gateway.make_user()
        refused = gateway.run_ssh(full, "web01", "true")
        assert refused.returncode == 255 and b"cannot be recorded" in refused.stderr
    finally:
        unmount(recordings)


def test_tampered_recording_is_not_replayed_or_exported(gateway: Gateway, tmp_path: Path) -> None:
    user = gateway.make_user()
    assert gateway.run_ssh(user, "web01", "echo original-text").returncode == 0
    end = session_end(gateway, user.name)
    session = str(end["session"])
    replayed = gateway.cli("replay", session)
    assert replayed.returncode == 0 and "original-text" in replayed.stdout
    path = recording_of(gateway, session)
    path.chmod(0o644)
    path.write_text(path.read_text().replace("original-text", "forged---text"))
    for command in (
        ("replay", session),
        ("recordings", "export", session, "-o", str(tmp_path / "x")),
    ):
        refused = gateway.cli(*command)
        assert refused.returncode == 1
        assert "fails verification" in refused.stderr
        assert "forged" not in refused.stdout
    assert not (tmp_path / "x").exists()
    verified = gateway.cli("recordings", "verify", session)
    assert verified.returncode == 1 and "FAILED" in verified.stdout
    # Looking at a recording is itself audited, with the viewer as actor; so is every
    # refused replay or export and every failed verification, with its reason.
    events = [r for r in gateway.audit.events(Trail.HUMAN) if r.session_id == session]
    viewed = [(r.action, r.outcome) for r in events if r.action.startswith("recording.")]
    assert viewed == [
        ("recording.replayed", "success"),
        ("recording.replayed", "failure"),
        ("recording.exported", "failure"),
        ("recording.verify", "failure"),
    ]
    refusals = [r for r in events if r.action.startswith("recording.") and r.outcome == "failure"]
    assert all("sha256 is" in r.reason and r.actor for r in refusals)


def test_exec_commands_are_searchable(gateway: Gateway) -> None:
    user = gateway.make_user()
    assert gateway.run_ssh(user, "web01", "uname -a # exec-marker-42").returncode == 0
    deadline = time.monotonic() + 10
    while "exec-marker-42" not in gateway.cli("recordings", "search", "exec-marker-42").stdout:
        assert time.monotonic() < deadline
        time.sleep(0.2)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "q"])
def test_replay_restores_the_auditors_terminal_on_every_exit(gateway: Gateway, how: str) -> None:
    """A recording that sets insert mode, cursor keys, origin mode, a scroll region and
    the alternate screen leaves none of it behind, however the replay ends."""
    user = gateway.make_user()
    modes = "\\033[4h\\033[?1h\\033=\\033[?6h\\033[5;10r\\033[?1049h"
    run_shell(gateway, user, [f"printf '{modes}MODES-SET\\n'; sleep 4; printf 'la''te-marker\\n'"])
    end = session_end(gateway, user.name)
    child = pexpect.spawn(
        sys.executable, ["-m", "gateway.cli", "--config", str(gateway.config_path), "replay",
                   str(end["session"])],
        timeout=20, dimensions=(30, 100),
    )  # fmt: skip
    try:
        child.expect("MODES-SET")
        if how == "ctrl-c":
            child.sendcontrol("c")
        elif how == "sigterm":
            child.kill(signal.SIGTERM)
        else:
            child.send("q")
        child.expect(pexpect.EOF)
        output = child.before.decode(errors="replace")
    finally:
        child.close()
    assert child.exitstatus == 0, output
    assert "late-marker" not in output and "Traceback" not in output
    # Everything the recording set is undone after it was set.
    for was_set, undone in [
        ("\x1b[4h", "\x1b[4l"), ("\x1b[?1h", "\x1b[?1l"), ("\x1b=", "\x1b>"),
        ("\x1b[?6h", "\x1b[?6l"), ("\x1b[5;10r", "\x1b[r"), ("\x1b[?1049h", "\x1b[?1049l"),
    ]:  # fmt: skip
        assert output.rfind(undone) > output.rfind(was_set) >= 0 or was_set not in output, was_set
