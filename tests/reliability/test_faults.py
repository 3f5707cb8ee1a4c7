"""Faults: the gateway SIGKILLed with live sessions, a target dying, storage and database failing.

Related tests elsewhere (not repeated here): a target whose sshd is killed mid-session
(tests/test_human_lane.py::test_target_dying_mid_session_is_explained: the message, the
sealed recording and the reason in the audit event), one SIGKILL with a pty session
(tests/test_recordings.py::test_sigkill_leaves_a_readable_recording_and_marks_the_session),
a read-only and a full recordings filesystem on a small tmpfs when root
(test_unwritable_recording_storage_refuses_sessions,
test_full_recording_storage_ends_a_live_session), and an audit table that
refuses writes (tests/test_human_lane.py::test_no_audit_no_access,
tests/test_audit.py::test_audit_failure_means_the_action_does_not_happen).
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pexpect
import pytest
from sqlalchemy import select

from gateway.config import load_config
from gateway.domain.audit.trail import Trail
from gateway.domain.machines.registry import ScopeTarget
from gateway.services import GatewayServices
from gateway.store.models import SessionRecord
from recordings.asciicast import iter_events
from tests.support.gateway import Gateway, launch_gateway, set_prompt, spawn_shell
from tests.support.reliability import FULL, SIZE, trail_events, wait_for_events

pytestmark = [pytest.mark.reliability, pytest.mark.openssh]

#: Prints the target's wall clock ten times a second: the recording shows how recent it is.
TICKER = "while true; do echo tick-$(date +%s.%N); sleep 0.1; done"
TICKER_NHI = "svc-ticker"


def register_ticker(gateway: Gateway, folder: Path) -> Path:
    """An NHI allowed to run only TICKER on web01, and a certificate for it."""
    services = GatewayServices.open(load_config(gateway.config_path))
    try:
        services.machines.add(
            TICKER_NHI, actor="tests", kind="service-account", owner="tests", tech_owner="tests",
            purpose="crash tests", targets=[ScopeTarget("web01", "root")], commands=[TICKER],
            max_ttl_seconds=3600,
        )  # fmt: skip
        key = folder / "ticker_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        signed = services.machine_credentials.issue(
            TICKER_NHI, key.with_suffix(".pub").read_text(), 3600, actor="tests"
        )
        key.with_name(key.name + "-cert.pub").write_text(signed.certificate + "\n")
        return key
    finally:
        services.close()


def start_machine_ticker(gateway: Gateway, key: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["ssh", "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes",
         "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={gateway.known_hosts}", "-o", "StrictHostKeyChecking=yes",
         "-p", str(gateway.machine_port), f"{TICKER_NHI}:web01@127.0.0.1", TICKER],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def last_tick(path: Path) -> float:
    """The newest target clock reading in a (possibly torn) recording's output."""
    text = "".join(event.data for event in iter_events(path) if event.code == "o")
    ticks = [float(found) for found in re.findall(r"tick-(\d+\.\d+)", text)]
    assert ticks, f"no ticks in {path}"
    return max(ticks)


def sessions_by_id(gateway: Gateway) -> dict[str, SessionRecord]:
    services = GatewayServices.open(load_config(gateway.config_path))
    try:
        with services.store.transaction() as db:
            rows = db.scalars(select(SessionRecord)).all()
            db.expunge_all()
            return {row.id: row for row in rows}
    finally:
        services.close()


def wait_until_live(gateway: Gateway, count: int, timeout: float = 30) -> set[str]:
    deadline = time.monotonic() + timeout
    while True:
        live = {i for i, row in sessions_by_id(gateway).items() if row.status == "live"}
        if len(live) >= count or time.monotonic() > deadline:
            return live
        time.sleep(0.2)


def test_repeated_sigkill_with_live_sessions_loses_nothing(
    tmp_path: Path, figures: dict[str, Any]
) -> None:
    staleness = []
    with launch_gateway(tmp_path) as gateway:
        machine_key = register_ticker(gateway, tmp_path)
        for round_number in range(SIZE.kill_rounds):
            shells, clients = [], []
            for index in range(SIZE.live_per_kill):
                user = gateway.make_user()
                if index % 2 == 0:
                    shell = spawn_shell(gateway, user, "web01")
                    set_prompt(shell)
                    shell.sendline(TICKER)
                    shells.append(shell)
                else:
                    clients.append(gateway.start_ssh(user, "web01", TICKER))
            clients.append(start_machine_ticker(gateway, machine_key))
            live = wait_until_live(gateway, len(shells) + len(clients))
            assert len(live) == len(shells) + len(clients), f"round {round_number}: {live}"
            time.sleep(1.5)
            gateway.process.kill()
            killed_at = time.time()
            gateway.process.wait(timeout=10)
            for shell in shells:
                shell.expect(pexpect.EOF, timeout=20)
                shell.close()
            for client in clients:
                client.wait(timeout=20)
            rows = sessions_by_id(gateway)
            for session_id in live:
                path = gateway.data_dir / "recordings" / str(rows[session_id].recording_path)
                behind = killed_at - last_tick(path)
                staleness.append(behind)
                assert behind <= 1.0, f"{path} ends {behind:.2f} s before the kill"
            gateway.restart()
            rows = sessions_by_id(gateway)
            assert {i for i in live if rows[i].status == "interrupted"} == live
            interrupted = {
                e["session"]
                for trail in (Trail.HUMAN, Trail.MACHINE)
                for e in trail_events(gateway, trail, "session.interrupted")
            }
            assert live <= interrupted
            verify = gateway.cli("audit", "verify")
            assert verify.returncode == 0, verify.stdout + verify.stderr
            assert "machine: OK" in verify.stdout and "human: OK" in verify.stdout
            later = gateway.make_user()
            after = gateway.run_ssh(later, "web01", "echo alive")
            assert after.returncode == 0 and after.stdout == b"alive\n", after.stderr
    figures.update(
        kills=SIZE.kill_rounds,
        live_sessions_per_kill=SIZE.live_per_kill + 1,
        worst_recording_lag_seconds=round(max(staleness), 2),
        median_recording_lag_seconds=round(sorted(staleness)[len(staleness) // 2], 2),
    )


def test_recordings_directory_replaced_by_a_file_refuses_and_ends_sessions(
    tmp_path: Path,
) -> None:
    """Works as any user, root included (chmod would not stop root). Its own gateway:
    the removal takes every recording of the gateway with it."""
    with launch_gateway(tmp_path) as gateway:
        recordings = gateway.data_dir / "recordings"
        live_user = gateway.make_user()
        shell = spawn_shell(gateway, live_user, "web01")
        try:
            set_prompt(shell)
            shell.sendline("echo recorded-before")
            shell.expect("recorded-before")
            shutil.rmtree(recordings)
            recordings.write_text("not a directory\n")
            shell.sendline("echo after-removal")
            shell.expect("can no longer be recorded", timeout=10)
            shell.expect(pexpect.EOF, timeout=10)
            refused_user = gateway.make_user()
            refused = gateway.run_ssh(refused_user, "web01", "echo must-not-run")
            assert refused.returncode == 255
            assert b"cannot be recorded" in refused.stderr
            assert b"must-not-run" not in refused.stdout
        finally:
            shell.close()
            if recordings.is_file():
                recordings.unlink()
            recordings.mkdir(exist_ok=True)
        [end] = wait_for_events(gateway, Trail.HUMAN, "session.end", 1, actors={live_user.name})
        assert end["status"] == "interrupted"
        assert "recording" in end["reason"] and end["recording_incomplete"]
        later = gateway.make_user()
        assert gateway.run_ssh(later, "web01", "true").returncode == 0


@pytest.mark.sqlite  # holds SQLite's own write lock on the gateway's database file
def test_locked_database_grants_nothing_unaudited_and_recovers(
    tmp_path: Path, figures: dict[str, Any]
) -> None:
    # Held longer than the store's 30 s busy timeout at full size, so logins must fail closed.
    hold_seconds = 35.0 if FULL else 3.0
    with launch_gateway(tmp_path) as gateway:
        users = [gateway.make_user() for _ in range(3)]
        database = sqlite3.connect(gateway.data_dir / "pamgate.db", isolation_level=None)
        results: dict[str, subprocess.CompletedProcess[bytes]] = {}

        def attempt(index: int) -> None:
            results[users[index].name] = gateway.run_ssh(
                users[index], "web01", "echo granted", timeout=120
            )

        try:
            database.execute("BEGIN EXCLUSIVE")
            threads = [threading.Thread(target=attempt, args=(i,)) for i in range(len(users))]
            for thread in threads:
                thread.start()
            time.sleep(hold_seconds)
        finally:
            database.execute("ROLLBACK")
            database.close()
        for thread in threads:
            thread.join(timeout=150)
        starts = {e["actor"] for e in trail_events(gateway, Trail.HUMAN, "session.start")}
        granted = [name for name, result in results.items() if b"granted" in result.stdout]
        # Fail closed: whoever got in has a session.start in the trail.
        assert set(granted) <= starts
        verify = gateway.cli("audit", "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
        later = gateway.make_user()
        recovered = gateway.run_ssh(later, "web01", "echo granted")
        assert recovered.returncode == 0 and recovered.stdout == b"granted\n"
    figures.update(
        lock_held_seconds=hold_seconds,
        attempts_during_lock=len(users),
        granted_during_lock=len(granted),
        every_grant_audited=set(granted) <= starts,
    )


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, read from /proc (children of children too)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])  # after "(comm)": state, ppid
        children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def still_running(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":  # a zombie has exited; only its reaping is left
            alive.add(pid)
    return alive


def test_sigkill_of_serve_leaves_no_process_behind(tmp_path: Path) -> None:
    """Everything `pamgate serve` starts (the command-indexing worker and
    multiprocessing's helper among them) dies with it, even on SIGKILL."""
    with launch_gateway(tmp_path) as gateway:
        user = gateway.make_user()
        shell = spawn_shell(gateway, user, "web01")
        set_prompt(shell)
        shell.sendline("echo indexed-by-the-worker; exit")
        shell.expect(pexpect.EOF, timeout=20)
        shell.close()
        deadline = time.monotonic() + 20
        while len(helpers := descendants(gateway.process.pid)) < 2:
            assert time.monotonic() < deadline, f"the indexing worker never started: {helpers}"
            time.sleep(0.2)
        gateway.process.kill()
        gateway.process.wait(timeout=10)
        deadline = time.monotonic() + 5
        while alive := still_running(helpers):
            if time.monotonic() > deadline:
                commands = {
                    pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:120]
                    for pid in alive
                }
                for pid in alive:
                    subprocess.run(["kill", "-9", str(pid)], check=False)
                raise AssertionError(f"left running 5 s after serve was killed: {commands}")
            time.sleep(0.1)
