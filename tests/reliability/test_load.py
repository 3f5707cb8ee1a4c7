"""Load: many human sessions at once, a burst of machine logins, and a client that stops reading.

Everything goes through a real ``pamgate serve`` to a real ``sshd`` with the
stock ``ssh`` client. Sizes come from :data:`tests.reliability.conftest.SIZE`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from bench.machine_bench import NHI, machine_certificate, ssh_options
from gateway.domain.audit.trail import Trail
from recordings.asciicast import file_sha256
from tests.support.gateway import Gateway, TestUser, launch_gateway
from tests.support.reliability import SIZE, gateway_rss_kib, trail_events, wait_for_events

pytestmark = [pytest.mark.reliability, pytest.mark.openssh]

MB = 1024 * 1024

#: Says it is running, reads all of stdin, then sends ``{size}`` fresh random bytes back;
#: stderr's last line carries the target's own sha256 of what it received and of what it sent.
ROUND_TRIP = (
    "echo ready >&2; got=$(sha256sum | cut -c1-64); f=$(mktemp); "
    "head -c {size} /dev/urandom > $f; "
    'echo "$got $(sha256sum < $f | cut -c1-64)" >&2; cat $f; rm -f $f'
)
#: Logins in flight at once. Hundreds of simultaneous ``ssh`` clients, each starting an
#: askpass helper twice, starve this 2-core machine past the gateway's 60 s login timeout;
#: the sessions themselves still all run at once (see ``start_together``).
LOGINS_AT_ONCE = 16


def round_trip(
    gateway: Gateway,
    user: TestUser,
    payload: bytes,
    *,
    logins: threading.Semaphore | None = None,
    start_together: threading.Barrier | None = None,
) -> dict[str, Any]:
    """One session: ``payload`` up, as many random bytes down; what each end saw.

    With ``start_together``, no byte moves until every session of the barrier is in.
    """
    started = time.perf_counter()
    command = gateway.ssh_command(f"{user.name}:web01", extra=("-o", "ConnectTimeout=120"))
    with logins or contextlib.nullcontext():
        process = subprocess.Popen(
            [*command, ROUND_TRIP.format(size=len(payload))],
            env=gateway.ssh_env(user),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert process.stderr is not None
        ready = process.stderr.readline()
    if start_together is not None:
        if ready != b"ready\n":
            start_together.abort()  # this one never got in: nobody waits for it
        with contextlib.suppress(threading.BrokenBarrierError):
            start_together.wait(timeout=900)
    stdout, stderr = process.communicate(payload, timeout=900)
    stderr = ready + stderr
    target_got, _, target_sent = (
        stderr.decode(errors="replace").strip().rpartition("\n")[2].partition(" ")
    )
    return {
        "user": user.name,
        "returncode": process.returncode,
        "stderr": stderr[-500:],
        "sent_sha256": hashlib.sha256(payload).hexdigest(),
        "target_got_sha256": target_got,
        "target_sent_sha256": target_sent,
        "received_sha256": hashlib.sha256(stdout).hexdigest(),
        "received_bytes": len(stdout),
        "seconds": time.perf_counter() - started,
    }


def test_concurrent_sessions_deliver_every_byte_and_leave_sealed_evidence(
    tmp_path: Path, figures: dict[str, Any]
) -> None:
    size = SIZE.megabytes_per_session * MB
    with launch_gateway(tmp_path) as gateway:
        users = [gateway.make_user() for _ in range(SIZE.sessions)]
        payloads = [os.urandom(size) for _ in users]
        started = time.perf_counter()
        session = partial(
            round_trip,
            gateway,
            logins=threading.Semaphore(LOGINS_AT_ONCE),
            start_together=threading.Barrier(SIZE.sessions),
        )
        with ThreadPoolExecutor(SIZE.sessions) as pool:
            outcomes = list(pool.map(session, users, payloads))
        elapsed = time.perf_counter() - started
        failed = [o for o in outcomes if o["returncode"] != 0]
        assert not failed, [(o["user"], o["returncode"], o["stderr"]) for o in failed[:3]]
        for outcome in outcomes:
            # Upstream: what the client sent is what the target read.
            assert outcome["target_got_sha256"] == outcome["sent_sha256"], outcome
            # Downstream: what the target sent is what the client received.
            assert outcome["target_sent_sha256"] == outcome["received_sha256"], outcome
            assert outcome["received_bytes"] == size
        names = {u.name for u in users}
        ends = wait_for_events(gateway, Trail.HUMAN, "session.end", len(users), actors=names)
        starts = [
            e for e in trail_events(gateway, Trail.HUMAN, "session.start") if e["actor"] in names
        ]
        assert len(starts) == len(ends) == len(users)
        assert {e["session"] for e in starts} == {e["session"] for e in ends}
        by_user = {o["user"]: o for o in outcomes}
        recordings = gateway.data_dir / "recordings"
        for end in ends:
            outcome = by_user[end["actor"]]
            assert end["status"] == "closed" and end["exit_status"] == 0, end
            assert end["bytes_to_target"] == size and end["stdout_bytes"] == size
            # The gateway's own digest of every byte it relayed matches both ends.
            assert end["stdout_sha256"] == outcome["received_sha256"]
            sealed = recordings / str(end["recording"])
            assert end["recording_sha256"] == file_sha256(sealed)
            assert sealed.stat().st_mode & 0o222 == 0, "sealed recordings are read-only"
        verify = gateway.cli("audit", "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
        checked = gateway.cli("recordings", "verify", "--all")
        assert checked.returncode == 0, checked.stdout + checked.stderr
    moved = 2 * size * len(users)
    figures.update(
        sessions=len(users),
        megabytes_each_way_per_session=SIZE.megabytes_per_session,
        seconds=round(elapsed, 1),
        aggregate_mb_per_second=round(moved / MB / elapsed, 1),
        slowest_session_seconds=round(max(o["seconds"] for o in outcomes), 1),
        sealed_recordings=len(ends),
    )


def test_machine_login_burst_counts_add_up(tmp_path: Path, figures: dict[str, Any]) -> None:
    """Allowed, out-of-scope and uncertified logins at once: every one is counted and audited."""
    with launch_gateway(tmp_path) as gateway:
        certified = machine_certificate(gateway, tmp_path, ttl=3600)
        plain = tmp_path / "plain_ed25519"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(plain)], check=True
        )
        known_hosts = tmp_path / "machine_known_hosts"

        def attempt(index: int) -> tuple[str, int]:
            kind = ("allowed", "out-of-scope", "no-certificate")[index % 3]
            key = plain if kind == "no-certificate" else certified
            command = "true" if kind != "out-of-scope" else "id"
            result = subprocess.run(
                ["ssh", *ssh_options(key, known_hosts), "-o", "ConnectTimeout=120",
                 "-p", str(gateway.machine_port), f"{NHI}:web01@127.0.0.1", command],
                stdin=subprocess.DEVNULL, capture_output=True, timeout=300,
            )  # fmt: skip
            return kind, result.returncode

        started = time.perf_counter()
        with ThreadPoolExecutor(min(SIZE.machine_logins, 50)) as pool:
            outcomes = list(pool.map(attempt, range(SIZE.machine_logins)))
        elapsed = time.perf_counter() - started
        accepted = sum(1 for _, code in outcomes if code == 0)
        refused = sum(1 for _, code in outcomes if code != 0)
        expected = {
            kind: sum(1 for k, _ in outcomes if k == kind)
            for kind in ("allowed", "out-of-scope", "no-certificate")
        }
        # Only the allowed ones succeed: nothing refused slipped through, nothing allowed failed.
        assert [k for k, code in outcomes if code == 0 and k != "allowed"] == []
        assert [k for k, code in outcomes if code != 0 and k == "allowed"] == []
        ended = wait_for_events(gateway, Trail.MACHINE, "session.end", expected["allowed"])
        command_refused = trail_events(gateway, Trail.MACHINE, "command.refused")
        auth_refused = trail_events(gateway, Trail.MACHINE, "auth.refused")
        assert len(ended) == expected["allowed"]
        assert all(e["status"] == "closed" for e in ended)
        assert len(command_refused) == expected["out-of-scope"]
        # ssh offers the plain key once per connection; each is one auth.refused.
        assert len(auth_refused) == expected["no-certificate"]
        audited = len(ended) + len(command_refused) + len(auth_refused)
        assert accepted + refused == len(outcomes) == audited
        assert gateway.cli("audit", "verify").returncode == 0
        assert trail_events(gateway, Trail.HUMAN, "session.start") == []
    figures.update(
        attempts=len(outcomes),
        accepted=accepted,
        refused=refused,
        audited=audited,
        seconds=round(elapsed, 1),
        logins_per_second=round(len(outcomes) / elapsed, 1),
    )


def test_client_that_stops_reading_stalls_nobody_and_memory_stays_bounded(
    gateway: Gateway, figures: dict[str, Any]
) -> None:
    stalled_user = gateway.make_user()
    # 2 GB of output nobody reads: without flow control the gateway would buffer it all.
    stalled = gateway.start_ssh(stalled_user, "web01", "head -c 2000000000 /dev/zero")
    try:
        time.sleep(2)  # let every window and buffer between target and client fill up
        assert stalled.poll() is None
        before = gateway_rss_kib(gateway)
        samples = [before]
        others = [gateway.make_user() for _ in range(3)]
        payloads = [os.urandom(MB) for _ in others]
        started = time.perf_counter()
        with ThreadPoolExecutor(len(others)) as pool:
            outcomes = list(pool.map(partial(round_trip, gateway), others, payloads))
        others_seconds = time.perf_counter() - started
        for outcome in outcomes:
            assert outcome["returncode"] == 0, outcome
            assert outcome["target_sent_sha256"] == outcome["received_sha256"]
        for _ in range(10):
            time.sleep(0.3)
            samples.append(gateway_rss_kib(gateway))
        assert stalled.poll() is None, "the stalled session must stay open, just paused"
        growth_kib = max(samples) - before
        assert growth_kib < 64 * 1024, f"gateway RSS grew by {growth_kib} KiB while stalled"
    finally:
        stalled.kill()
        stalled.wait()
    # Reading again would have resumed it; killed, the session ends and is closed out.
    end = wait_for_events(gateway, Trail.HUMAN, "session.end", 1, actors={stalled_user.name})
    assert end, "the stalled session's end was not recorded"
    figures.update(
        others_seconds_for_1mb_each_way=round(others_seconds, 2),
        gateway_rss_kib_before=before,
        gateway_rss_growth_kib=growth_kib,
    )
