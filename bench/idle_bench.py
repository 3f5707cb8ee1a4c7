"""Memory per session: pamgate's resident memory with N idle and M active shells through it.

Run:  .venv/bin/python -m bench.idle_bench [--sessions 1000] [--active 100] [--json FILE]

N + M clients (asyncssh, in this process, so the client side costs little)
each log in with password and TOTP and open a pty shell on the target
through pamgate. N sit idle; M print a line every 100 ms while the memory is
measured. Reported: the gateway process's RSS before and with them, and the
growth per session (goal ≤ 0.5 MiB), counting the active ones too. Each
session holds a client connection, an upstream connection, a live recording
and its ledger row. File-descriptor limits are raised to the hard limit
(the gateway inherits them); the target sshd already allows 200 logins in
flight (MaxStartups), and each session is its own connection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncssh
import pyotp

from tests.support.gateway import Gateway, TestUser, launch_gateway

#: Logins at once while the sessions are opened (sshd's MaxStartups is 200).
OPENING_AT_ONCE = 20


def rss_kib(pid: int) -> int:
    """Resident memory of one process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


async def open_idle_session(
    gateway: Gateway, user: TestUser, gate: asyncio.Semaphore
) -> tuple[asyncssh.SSHClientConnection, asyncssh.SSHClientProcess[str]]:
    """Log in through pamgate as ``user`` and start a shell on web01 that then idles."""

    class Answers(asyncssh.SSHClient):
        def kbdint_auth_requested(self) -> str:
            return ""

        def kbdint_challenge_received(self, name, instructions, lang, prompts):  # noqa: ANN001, ANN201
            return [user.password if "Password" in prompt else pyotp.TOTP(user.totp_secret).now()
                    for prompt, _ in prompts]  # fmt: skip

    async with gate:
        conn, _ = await asyncssh.create_connection(
            Answers, "127.0.0.1", gateway.port, username=f"{user.name}:web01",
            known_hosts=str(gateway.known_hosts), client_keys=None, agent_path=None,
            preferred_auth="keyboard-interactive", config=None,
        )  # fmt: skip
        process = await conn.create_process(term_type="xterm", term_size=(80, 24))
        await asyncio.wait_for(process.stdout.read(1), 60)  # the shell is up (prompt)
    return conn, process


#: What an active session runs meanwhile: a line every 100 ms. ``read -t`` waits
#: without a process per line (``sleep`` would fork 1,000 times a second for 100
#: sessions and load the machine more than the gateway does).
BUSY_LOOP = "while :; do echo busy-busy-busy; read -rt 0.1; done\n"


async def hold_sessions(
    gateway: Gateway, users: list[TestUser], active: int = 0
) -> tuple[int, float]:
    """Open every session (the first ``active`` of them printing), then measure the
    gateway's RSS; returns (KiB, seconds to open)."""
    gate = asyncio.Semaphore(OPENING_AT_ONCE)
    started = time.perf_counter()
    opened_count = 0

    async def open_one(user: TestUser) -> tuple[asyncssh.SSHClientConnection, Any]:
        nonlocal opened_count
        session = await open_idle_session(gateway, user, gate)
        opened_count += 1
        if opened_count % 100 == 0:
            print(f"{opened_count}/{len(users)} sessions open", file=sys.stderr, flush=True)
        return session

    opened = await asyncio.gather(*(open_one(user) for user in users))
    took = time.perf_counter() - started
    drains = []
    for _, process in opened[:active]:
        process.stdin.write(BUSY_LOOP)
        drains.append(asyncio.create_task(drain(process)))
    await asyncio.sleep(3)  # let the gateway settle (recording flushes, audit)
    resident = rss_kib(gateway.process.pid)
    for task in drains:
        task.cancel()
    for conn, process in opened:
        process.close()
        conn.close()
    return resident, took


async def drain(process: Any) -> None:
    """Read an active session's output so its window never fills."""
    while await process.stdout.read(65536):
        pass


def raise_file_limit() -> int:
    """Raise this process's open-files limit to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=1000, help="idle sessions")
    parser.add_argument("--active", type=int, default=100, help="sessions printing meanwhile")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    total = args.sessions + args.active
    limit = raise_file_limit()
    # Per session: the client's socket here; two sockets and a recording in the gateway.
    if limit < 4 * total + 100:
        raise SystemExit(f"open-files hard limit {limit} is too low for {total} sessions")
    with (
        tempfile.TemporaryDirectory(prefix="pamgate-idle-bench-") as folder,
        launch_gateway(Path(folder) / "gw") as gateway,
    ):
        users = []
        for number in range(1, total + 1):
            users.append(gateway.make_user())  # a password hash and a TOTP enrolment each
            if number % 100 == 0:
                print(f"{number}/{total} users created", file=sys.stderr, flush=True)
        # One session first, so the baseline includes everything loaded once.
        warm = gateway.make_user()
        asyncio.run(hold_sessions(gateway, [warm]))
        time.sleep(2)
        before = rss_kib(gateway.process.pid)
        during, took = asyncio.run(hold_sessions(gateway, users, args.active))
    per_session = (during - before) / total
    figures = {
        "sessions": args.sessions,
        "active_sessions": args.active,
        "rss_before_mib": before / 1024,
        "rss_with_sessions_mib": during / 1024,
        "per_session_kib": per_session,
        "seconds_to_open": took,
    }
    print(f"{args.sessions} idle + {args.active} active pty sessions through pamgate "
          f"(opened in {took:.1f} s)")  # fmt: skip
    print(f"gateway RSS: {before / 1024:.1f} MiB before, {during / 1024:.1f} MiB with them")
    print(f"per session: {per_session:.0f} KiB  (goal <= 512 KiB)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
