"""Memory per idle session: pamgate's resident memory with N idle shells through it.

Run:  .venv/bin/python -m bench.idle_bench [--sessions 200] [--json FILE]

N clients (asyncssh, in this process, so the client side costs little) each
log in with password and TOTP, open a pty shell on the target through
pamgate and then sit idle. Reported: the gateway process's RSS before and
after, and the growth per idle session (goal ≤ 0.5 MiB). Each session holds
a client connection, an upstream connection, a live recording and its
ledger row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import asyncssh
import pyotp

from tests.conftest import Gateway, TestUser, launch_gateway

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
        await asyncio.wait_for(process.stdout.read(1), 20)  # the shell is up (prompt)
    return conn, process


async def hold_sessions(gateway: Gateway, users: list[TestUser]) -> tuple[int, float]:
    """Open every session, then measure the gateway's RSS; returns (KiB, seconds to open)."""
    gate = asyncio.Semaphore(OPENING_AT_ONCE)
    started = time.perf_counter()
    opened = await asyncio.gather(*(open_idle_session(gateway, user, gate) for user in users))
    took = time.perf_counter() - started
    await asyncio.sleep(3)  # let the gateway settle (recording flushes, audit)
    resident = rss_kib(gateway.process.pid)
    for conn, process in opened:
        process.close()
        conn.close()
    return resident, took


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="pamgate-idle-bench-") as folder,
        launch_gateway(Path(folder) / "gw") as gateway,
    ):
        users = [gateway.make_user() for _ in range(args.sessions)]
        # One session first, so the baseline includes everything loaded once.
        warm = gateway.make_user()
        asyncio.run(hold_sessions(gateway, [warm]))
        time.sleep(2)
        before = rss_kib(gateway.process.pid)
        during, took = asyncio.run(hold_sessions(gateway, users))
    per_session = (during - before) / args.sessions
    figures = {
        "sessions": args.sessions,
        "rss_before_mib": before / 1024,
        "rss_with_sessions_mib": during / 1024,
        "per_session_kib": per_session,
        "seconds_to_open": took,
    }
    print(f"{args.sessions} idle pty sessions through pamgate (opened in {took:.1f} s)")
    print(f"gateway RSS: {before / 1024:.1f} MiB before, {during / 1024:.1f} MiB with them")
    print(f"per idle session: {per_session:.0f} KiB  (goal <= 512 KiB)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
