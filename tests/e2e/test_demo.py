"""``pamgate demo`` as a new user meets it: follow its output, log in, run ``id``."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pyotp
import pytest

from gateway.devtools.demo import PREFERRED_GATEWAY_PORT
from gateway.devtools.openssh_target import free_port
from tests.support.demo import credentials, start_demo, stop_demo
from tests.support.gateway import write_askpass

pytestmark = pytest.mark.openssh


def test_demo_can_be_followed_to_a_shell_on_the_target(tmp_path: Path) -> None:
    data_dir = tmp_path / "pamgate-demo"
    port, machine_port = free_port(), free_port()
    child, output = start_demo(data_dir, port, machine_port)
    try:
        command = re.search(r"(ssh -p \d+ alice:web01@127\.0\.0\.1)", output).group(1)
        assert f"-p {port} " in command
        assert "otpauth://totp/pamgate:alice?secret=" in output
        assert "▀" in output or "█" in output  # a QR code, since stdout is a terminal
        config_hint = re.search(r"(\S+) --config (\S+) user list", output)
        password, secret = credentials(output, "alice")
        askpass = write_askpass(tmp_path / "askpass.py")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SSH_")}
        env.update(
            SSH_ASKPASS=str(askpass),
            SSH_ASKPASS_REQUIRE="force",
            DISPLAY=":0",
            PG_PASSWORD=password,
            PG_TOTP_SECRET=secret,
        )
        ssh = command.split() + [
            "-F", "/dev/null", "-o", "StrictHostKeyChecking=accept-new",
            "-o", f"UserKnownHostsFile={tmp_path / 'known_hosts'}", "-o", "IdentityAgent=none",
            "id",
        ]  # fmt: skip
        result = subprocess.run(
            ssh, env=env, capture_output=True, timeout=30, stdin=subprocess.DEVNULL
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"uid={os.getuid()}(".encode())
        # The printed config works for other commands against the running demo.
        listing = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "--config",
                str(data_dir / "pamgate.toml"),
                "user",
                "list",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert listing.returncode == 0 and "alice" in listing.stdout and "bob" in listing.stdout
        assert config_hint and config_hint.group(2).endswith("pamgate.toml")
        # The quick tour's approval flow: alice waits for db01, bob approves.
        # alice logged in a moment ago: her current code is spent, so use the next one.
        next_code = pyotp.TOTP(secret).at(time.time() + 30)
        alice_env = {**env, "TERM": "xterm", "PG_TOTP_CODE": next_code}
        waiting = pexpect.spawn(
            "ssh", ["-tt", "-p", str(port), "-F", "/dev/null", "-o", "StrictHostKeyChecking=no",
                    "-o", f"UserKnownHostsFile={tmp_path / 'known_hosts'}",
                    "-o", "IdentityAgent=none", "alice:db01@127.0.0.1"],
            env=alice_env, timeout=30,
        )  # fmt: skip
        try:
            waiting.expect("Reason for access to")
            waiting.sendline("demo tour")
            waiting.expect(r"Request #(\d+) for db01")
            request_id = waiting.match.group(1).decode()
            # bob approves as the demo says: over SSH, with the command it printed.
            bob_password, bob_secret = credentials(output, "bob")
            printed = re.search(r"(ssh -p \d+ bob:admin@127\.0\.0\.1) request approve N", output)
            assert printed, "the demo prints how to approve over SSH"
            bob_env = {**env, "PG_PASSWORD": bob_password, "PG_TOTP_SECRET": bob_secret}
            approve = subprocess.run(
                [*printed.group(1).split(), "-F", "/dev/null", "-o", "StrictHostKeyChecking=no",
                 "-o", f"UserKnownHostsFile={tmp_path / 'known_hosts'}",
                 "-o", "IdentityAgent=none", "request", "approve", request_id],
                env=bob_env, capture_output=True, text=True, timeout=60,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
            assert approve.returncode == 0, approve.stderr
            waiting.expect("approved by bob")
            waiting.sendline("echo on-db01-now; exit")
            waiting.expect("on-db01-now")
            waiting.expect(pexpect.EOF)
        finally:
            waiting.close()
        follow_machine_lane_tour(output, tmp_path, machine_port)
        # The forwarding example, as printed (bob: alice's codes of this window are spent).
        forward = re.search(r"    (ssh -p \d+ -N -L (\d+):\S+ )alice(:web01@127\.0\.0\.1)", output)
        assert forward, "the demo prints an ssh -L example"
        bob_next = pyotp.TOTP(bob_secret).at(time.time() + 30)
        tunnel = subprocess.Popen(
            [*f"{forward.group(1)}bob{forward.group(3)}".split(), "-F", "/dev/null",
             "-o", "StrictHostKeyChecking=no", "-o", "ExitOnForwardFailure=yes",
             "-o", f"UserKnownHostsFile={tmp_path / 'known_hosts'}", "-o", "IdentityAgent=none"],
            env={**bob_env, "PG_TOTP_CODE": bob_next}, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            banner = b""
            deadline = time.monotonic() + 30
            while not banner.startswith(b"SSH-2.0-"):
                assert tunnel.poll() is None, tunnel.stderr.read() if tunnel.stderr else ""
                assert time.monotonic() < deadline, "the forward never answered"
                with socket.socket() as local:
                    if local.connect_ex(("127.0.0.1", int(forward.group(2)))) == 0:
                        local.settimeout(10)
                        banner = local.recv(64)
                        continue
                time.sleep(0.3)
        finally:
            tunnel.terminate()
            tunnel.wait(timeout=10)
        follow_entitlement_tour(output, data_dir, tmp_path, bob_env)
    finally:
        stop_demo(child)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # the gateway is gone

    # A second run reuses the same users and credentials.
    child, again = start_demo(data_dir, port, machine_port)
    try:
        assert credentials(again, "alice") == (password, secret)
    finally:
        stop_demo(child)


def follow_entitlement_tour(
    output: str, data_dir: Path, folder: Path, bob_env: dict[str, str]
) -> None:
    """The demo's over-broad NHI shows up as such; a campaign bob decides over SSH suspends it."""
    block = output[output.index("Entitlement review:") : output.index("Every other command")]
    assert "demo-backup" in block
    ssh = ["-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "IdentityAgent=none",
           "-o", f"UserKnownHostsFile={folder / 'known_hosts'}"]  # fmt: skip
    stale = re.search(r"(ssh -p \d+ bob:admin@127\.0\.0\.1) access stale", block)
    assert stale, block
    cli = [sys.executable, "-m", "gateway.cli", "--config", str(data_dir / "pamgate.toml")]
    found = subprocess.run([*cli, "access", "stale"], capture_output=True, text=True, timeout=60)
    assert found.returncode == 3, found.stderr  # findings
    broad = [line for line in found.stdout.splitlines() if line.startswith("nhi-broad")]
    assert any("demo-backup" in line and "re:.*" in line and "EXCESSIVE" in line for line in broad)
    due = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 7 * 86400))
    started = subprocess.run([*cli, "review", "start", "--of", "machines", "--due", due],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert started.returncode == 0, started.stderr
    campaign = re.search(r"#(\d+)", started.stdout).group(1)
    listed = subprocess.run([*cli, "review", "list", campaign, "--json"], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    item = next(json.loads(line) for line in listed.stdout.splitlines()
                if json.loads(line)["identity"] == "demo-backup")  # fmt: skip
    assert "bob" in item["reviewers"]  # its owner
    # bob spent this step's code and the next one (approval, forward): wait for a step to pass.
    time.sleep(30 - time.time() % 30 + 0.5)
    code = pyotp.TOTP(bob_env["PG_TOTP_SECRET"]).at(time.time() + 30)
    bob_env = {**bob_env, "PG_TOTP_CODE": code}
    decided = subprocess.run(
        [*stale.group(1).split(), *ssh, f"review decide {item['id']} suspend --note 'unused'"],
        env=bob_env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert decided.returncode == 0, decided.stderr
    shown = subprocess.run([*cli, "machine", "show", "demo-backup", "--json"],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert json.loads(shown.stdout)["status"] == "suspended"


def follow_machine_lane_tour(output: str, folder: Path, machine_port: int) -> None:
    """Run the machine-lane commands the demo printed, as printed (bar the known_hosts file)."""
    block = output[output.index("Register a workload") : output.index("Anything else is refused")]
    commands: list[str] = []
    for line in block.splitlines()[1:]:
        if commands and commands[-1].endswith("\\"):
            commands[-1] = commands[-1][:-1] + line.strip()
        elif line.startswith("    "):
            commands.append(line.strip())
    assert [c.split()[0] for c in commands] == ["pamgate", "ssh-keygen", "pamgate", "ssh"]
    assert f"-p {machine_port} " in commands[-1]
    cli = f"{sys.executable} -m gateway.cli"
    ssh = ("ssh -F /dev/null -o StrictHostKeyChecking=accept-new -o IdentityAgent=none "
           f"-o BatchMode=yes -o UserKnownHostsFile={folder / 'machine_known_hosts'}")  # fmt: skip
    for command in commands:
        program, rest = command.split(" ", 1)
        program = {"pamgate": cli, "ssh": ssh}.get(program, program)
        result = subprocess.run(["bash", "-c", f"{program} {rest}"], cwd=folder,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert result.returncode == 0, (command, result.stderr)
    assert "load average" in result.stdout  # uptime ran on the target
    assert "ssh-ed25519 " in output[output.index("Machine lane:") :]  # the machine CA key


def test_a_busy_default_port_is_announced_loudly(tmp_path: Path) -> None:
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", PREFERRED_GATEWAY_PORT))
    except OSError:
        holder.close()  # busy already, which is what this test needs
        holder = None
    try:
        child = pexpect.spawn(
            sys.executable, ["-m", "gateway.cli", "demo", "--data-dir", str(tmp_path / "d")],
            timeout=60, dimensions=(60, 200),
        )  # fmt: skip
        child.expect("Press Ctrl-C to stop the demo")
        output = child.before.decode()
        port = re.search(r"gateway \(human lane\)  127\.0\.0\.1:(\d+)", output).group(1)
        assert port != str(PREFERRED_GATEWAY_PORT)
        assert f"!! Port {PREFERRED_GATEWAY_PORT} was taken" in output
        assert f"Use -p {port} wherever the README says -p {PREFERRED_GATEWAY_PORT}" in output
        stop_demo(child)
    finally:
        if holder is not None:
            holder.close()


def test_a_second_demo_in_the_same_directory_says_so(tmp_path: Path) -> None:
    data_dir = tmp_path / "pamgate-demo"
    child, _ = start_demo(data_dir, free_port(), free_port())
    try:
        second = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "demo", "--data-dir", str(data_dir)],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert second.returncode == 1
        assert "a demo is already running from" in second.stderr
        assert f"(pid {child.pid})" in second.stderr and "--data-dir" in second.stderr
        assert "Traceback" not in second.stderr + second.stdout
        assert child.isalive()  # the first one is untouched
    finally:
        stop_demo(child)


@pytest.mark.parametrize("delay", [0.5, 1.5, 3.0])
def test_ctrl_c_while_the_demo_starts_exits_cleanly(tmp_path: Path, delay: float) -> None:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "gateway.cli", "demo", "--data-dir", str(tmp_path / "d"),
         "--port", str(free_port()), "--machine-port", str(free_port())],
        timeout=60, dimensions=(60, 200),
        # As an interactive shell starts it: a suite run in the background (CI) inherits
        # SIGINT ignored, and Python then never raises KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    time.sleep(delay)
    child.sendcontrol("c")
    child.expect(pexpect.EOF)
    output = child.before.decode(errors="replace")
    child.close()
    assert "Traceback" not in output, output[-2000:]
    # 0 or 130 once pamgate handles it; SIGINT itself if it lands before Python does.
    outcome = (child.exitstatus, child.signalstatus)
    assert outcome in ((0, None), (130, None), (None, signal.SIGINT)), (outcome, output[-500:])
    # Nothing it started is left behind (the demo target's sshd above all).
    deadline = time.monotonic() + 5
    while (left := subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True,
                                  text=True).stdout.split()):  # fmt: skip
        if time.monotonic() > deadline:
            subprocess.run(["kill", *left], check=False)
            raise AssertionError(f"left running after Ctrl-C: {left}")
        time.sleep(0.2)
