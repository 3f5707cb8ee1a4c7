"""The README's five-minute tour, run as written against a real demo.

Every ``console`` block between the tour markers is a script: ``$ `` lines
are commands (a trailing backslash continues one), the lines after them the
output expected, where ``<...>`` is any text, ``<NAME>`` a word that is
captured on first sight and stands for the same value afterwards (in later
output and in later commands: ``request approve <N>``), and ``...`` any
number of lines. A command ending in ``# refused...`` must fail; every other
must succeed. The test substitutes only what a reader's machine changes: the
ports the demo took, the path of ``pamgate``, and answers to the password
and code prompts (from what the demo printed, one fresh code per login).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyotp
import pytest

from gateway.devtools.openssh_target import free_port
from tests.support.demo import credentials, start_demo, stop_demo
from tests.support.docs import page
from tests.support.gateway import write_askpass

pytestmark = pytest.mark.openssh

DOC_PORT, DOC_MACHINE_PORT = 2222, 2223
PLACEHOLDER = re.compile(r"<(\.\.\.|[A-Z]+)>")


@dataclass
class Step:
    command: str
    expected: list[str]


def tour_steps(readme: str) -> list[Step]:
    """The commands of the README's tour and the output each is documented to print."""
    tour = readme.split("<!-- --8<-- [start:tour] -->")[1].split("<!-- --8<-- [end:tour] -->")[0]
    steps: list[Step] = []
    for block in re.findall(r"```console\n(.*?)```", tour, re.DOTALL):
        continued = False
        for line in block.splitlines():
            if continued:
                steps[-1].command = steps[-1].command[:-1] + " " + line.strip()
            elif line.startswith("$ "):
                steps.append(Step(line[2:], []))
            else:
                steps[-1].expected.append(line)
            continued = line.endswith("\\")
    return steps


def line_pattern(expected: str, captured: dict[str, str]) -> re.Pattern[str]:
    parts, position = [], 0
    for found in PLACEHOLDER.finditer(expected):
        parts.append(re.escape(expected[position : found.start()]))
        name = found.group(1)
        if name == "...":
            parts.append(".*?")
        elif name in captured:
            parts.append(re.escape(captured[name]))
        elif f"(?P<{name}>" in "".join(parts):
            parts.append(f"(?P={name})")
        else:
            parts.append(rf"(?P<{name}>\S+)")
        position = found.end()
    parts.append(re.escape(expected[position:]))
    return re.compile(re.sub(r"(\\ )+", r"\\s+", "".join(parts)))


def check_output(step: Step, actual: list[str], captured: dict[str, str]) -> None:
    """Match the documented lines in order; capture placeholders."""
    index, skipping = 0, False
    for expected in step.expected:
        if expected.strip() == "...":
            skipping = True
            continue
        pattern = line_pattern(expected.strip(), captured)
        while True:
            assert index < len(actual), f"{step.command!r}: no line like {expected!r} in {actual}"
            found = pattern.fullmatch(actual[index].strip())
            index += 1
            if found:
                captured.update({k: v for k, v in found.groupdict().items() if v is not None})
                break
            assert skipping, f"{step.command!r}: {actual[index - 1]!r} is not {expected!r}"
        skipping = False
    assert skipping or index == len(actual), f"{step.command!r}: undocumented {actual[index:]}"


class Codes:
    """One unused TOTP code per login: codes are single use, and a newer one is needed
    each time (steps now-1..now+1 are accepted), so waits where the tour would.

    Never the previous step's code: a login that takes a few seconds on a loaded
    machine may reach the gateway after the step has moved on twice."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def next(self, user: str, secret: str) -> str:
        while True:
            now = int(time.time() // 30)
            step = max(self._last.get(user, -1) + 1, now)
            if step <= now + 1:
                self._last[user] = step
                return pyotp.TOTP(secret).at(step * 30)
            time.sleep(1)


def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    steps = tour_steps(page("README.md"))
    assert len(steps) >= 10, "the tour lost its commands"
    port, machine_port = free_port(), free_port()
    child, output = start_demo(tmp_path / "pamgate-demo", port, machine_port)
    askpass = write_askpass(tmp_path / "askpass.py")
    ssh_options = (
        f"-F /dev/null -o LogLevel=ERROR -o StrictHostKeyChecking=accept-new "
        f"-o UserKnownHostsFile={tmp_path / 'known_hosts'} -o IdentityAgent=none "
        "-o IdentitiesOnly=yes"
    )
    pamgate = str(Path(sys.executable).with_name("pamgate"))
    codes, captured = Codes(), {}
    try:
        for step in steps:
            command = PLACEHOLDER.sub(lambda m: captured[m.group(1)], step.command)
            command = command.replace(f"-p {DOC_PORT} ", f"-p {port} ")
            command = command.replace(f"-P {DOC_PORT} ", f"-P {port} ")
            command = command.replace(f"-p {DOC_MACHINE_PORT} ", f"-p {machine_port} ")
            command = command.replace(".venv/bin/pamgate ", f"{pamgate} ")
            env = {k: v for k, v in os.environ.items() if not k.startswith("SSH_")}
            if command.startswith("scp "):  # with a login certificate: no prompt to answer
                command = command.replace("scp ", f"scp {ssh_options} ", 1)
            elif command.startswith("ssh "):
                login = next(word for word in shlex.split(command) if "@127.0.0.1" in word)
                user = re.split(r"[:@]", login)[0]
                if f"-p {machine_port} " in command or "BatchMode=yes" in command:
                    command = command.replace("ssh ", f"ssh {ssh_options} -o BatchMode=yes ", 1)
                else:
                    password, secret = credentials(output, user)
                    command = command.replace("ssh ", f"ssh {ssh_options} ", 1)
                    env.update(
                        SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0",
                        PG_PASSWORD=password, PG_TOTP_CODE=codes.next(user, secret),
                    )  # fmt: skip
            result = subprocess.run(
                ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True,
                text=True, timeout=120, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            refused = re.search(r"#\s*refused", step.command) is not None
            assert (result.returncode != 0) == refused, (command, result.returncode, result.stderr)
            check_output(step, result.stderr.splitlines() + result.stdout.splitlines(), captured)
    finally:
        stop_demo(child)
    assert {"N", "GRANT", "SESSION", "SERIAL", "HOST"} <= captured.keys()
