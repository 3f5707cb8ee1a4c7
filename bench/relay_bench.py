"""Relay throughput: pamgate (recording on) side by side with OpenSSH and ssh-mitm, in the same run.

Run:  .venv/bin/python -m bench.relay_bench [--exec-megabytes 500] [--pty-megabytes 200]
          [--ciphers chacha20-poly1305@openssh.com,aes128-gcm@openssh.com] [--repeat 3]
          [--no-mitm] [--json FILE]

Paths measured, each moving the same bytes from a loopback sshd to a stock ``ssh``:
- direct:   ssh → sshd (a certificate from the same CA)
- -J:       ssh → sshd (bastion) → sshd, end-to-end encrypted (cannot record)
- pamgate:  ssh → pamgate → sshd, recording every byte (exec payload cap unlimited)
- pamgate-default: exec only, through a second gateway with the default
            settings: the first MiB of each exec stream recorded, every byte
            counted and sha256-digested (``exec_payload_cap_bytes``)
- ssh-mitm: ssh → ssh-mitm → sshd, ssh-mitm recording (see bench/mitm.py; AES only)
For exec (``ssh host cmd``) and through a pty (``ssh -tt host cmd``), each
moving N MB of base64 text (``head -c ... /dev/zero | base64 -w 0``): text,
as terminals carry, because NUL bytes would cost JSON six bytes each in a
recording and measure the escaping, not the relay. The client's cipher is
set with ``-c``; every output byte is counted, and a path that delivers fewer
bytes than were sent is reported, not hidden.
Each login through pamgate uses a fresh user (TOTP codes are single-use).

A single session's MB/s is timed from the first byte of output to the last,
so it measures the relay and not the logins before it: two for -J (bastion
and target), two for pamgate (the gateway's password + TOTP and its own
certificate login to the target), one for direct. The login benchmark
measures those. Each sample keeps ``seconds_with_login`` too, and the JSON
has the medians with logins (``mb_per_s_with_login``).

CPU-seconds per GB relayed, for pamgate and for the -J bastion: the CPU the
middle hop's process tree used during the transfer (the gateway's ``pamgate
serve`` and its children; the bastion sshd and its per-connection processes),
from the kernel's accounting (bench/proctree.py), divided by the bytes. Unlike
MB/s, this does not depend on how busy the machine is. The same accounting
over every process the bytes pass through (the client ssh with its
ProxyCommand, the middle hop, the target sshd with the command it runs)
gives each path's whole CPU per GB: when the machine's cores are all busy,
as on a 2-core machine running client, relay and target at once, the
throughput of each path follows that figure, not the middle hop's alone.

Aggregate (``--aggregate-sessions 8``): that many exec sessions moving
``--aggregate-megabytes`` each at once, through -J and through pamgate with
the default settings, with one relay process and with one per core
(``[node] workers = 0``; reported as not available when this build of the
gateway does not accept the setting). Each session logs in, says it is
ready and waits; once all are ready they start together, and the total MB/s
and the middle hop's CPU are taken from that start to the last byte, so the
logins (eight password + TOTP checks at once, for pamgate) are not in them.

Medians of --repeat runs; read the ratios: these machines are shared and noisy.
The 1-minute load average at each measurement is kept with it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import NamedTuple

from bench.mitm import MITM_CIPHERS, MitmUnavailable, mitm_proxy, recorded_bytes
from bench.proctree import (
    become_subreaper,
    descendants,
    reap,
    settled_cpu_seconds,
    tree_cpu_seconds,
)
from gateway.devtools.openssh_target import OpenSSHTarget, free_port
from gateway.errors import PamgateError
from tests.support.gateway import Gateway, launch_gateway

CIPHERS = ("chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com")
PATHS = ("direct", "-J", "pamgate", "pamgate-default", "ssh-mitm")
#: The paths through pamgate (what each records: see the module docstring).
PAMGATE_PATHS = ("pamgate", "pamgate-default")
#: Record every exec byte too, so exec and pty cost the same recording work.
RECORD_EVERYTHING = "\n[recordings]\nexec_payload_cap_bytes = 1099511627776\n"
#: One relay process per core (the wave-workers setting; 0 means one per core).
EVERY_CORE = "\n[node]\nworkers = 0\n"
#: What an aggregate session prints once it has logged in, before it waits for the start.
READY_MARK = b"R"


def client_certificate(gateway: Gateway, folder: Path, principal: str) -> Path:
    """A client key signed by the gateway's upstream CA, so plain ssh can reach the target."""
    key = folder / "client_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    ca = gateway.data_dir / "keys" / "upstream_ca"
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(ca), "-I", "bench", "-n", principal, "-V", "-5m:+2h",
         str(key.with_suffix(".pub"))],
        check=True,
    )  # fmt: skip
    return key


def base_options(key: Path, known_hosts: Path, cipher: str | None = None) -> list[str]:
    """Options for a stock ``ssh`` that reads no user config and asks nothing."""
    options = [
        "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
        "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
    ]  # fmt: skip
    return [*options, "-c", cipher] if cipher else options


def timed(command: list[str], env: dict[str, str] | None = None, expect: int = 0) -> float:
    """Seconds ``command`` took; raises if it failed or printed fewer than ``expect`` bytes."""
    done = transfer(command, env)
    if done.received < expect:
        raise RuntimeError(
            f"{command[:3]}... printed {done.received} of {expect} bytes: {done.stderr!r}"
        )
    return done.seconds


class Transfer(NamedTuple):
    """One command's run, its output counted and not kept."""

    #: From launch to the last byte of output.
    seconds: float
    #: From launch to the first byte of output: the logins and the session's set-up.
    first_byte_seconds: float
    received: int
    #: The last 500 bytes of its stderr.
    stderr: bytes

    @property
    def streaming_seconds(self) -> float:
        """From the first byte of output to the last: the relay's share, no login in it."""
        return self.seconds - self.first_byte_seconds


def transfer(
    command: list[str],
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
    on_first_output: Callable[[int], None] | None = None,
) -> Transfer:
    """Run ``command``, counting (not keeping) its output.

    ``on_first_output`` is called with the command's pid when the first bytes arrive
    (the login is over).
    Raises if it exits non-zero with no output at all.
    """  # fmt: skip
    started = time.perf_counter()
    first_byte = 0.0
    with subprocess.Popen(
        command, env=env, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as process:  # fmt: skip
        assert process.stdout is not None and process.stderr is not None
        if stdin:
            assert process.stdin is not None
            process.stdin.write(stdin)
            process.stdin.flush()  # left open: a closed stdin would end the shell early
        received = 0
        while chunk := process.stdout.read1(1 << 20):
            if received == 0:
                first_byte = time.perf_counter() - started
                if on_first_output is not None:
                    on_first_output(process.pid)
            received += len(chunk)
        elapsed = time.perf_counter() - started
        stderr = process.stderr.read()[-500:]
        if process.stdin is not None:
            process.stdin.close()
        status = process.wait(timeout=60)
    if status != 0 and received == 0:
        raise RuntimeError(f"{command[:3]}... failed ({status}): {stderr!r}")
    return Transfer(elapsed, first_byte, received, stderr)


def payload_command(size: int) -> str:
    """A shell command printing exactly ``size`` bytes of base64 text (size divisible by 4)."""
    return f"head -c {size * 3 // 4} /dev/zero | base64 -w 0"


class Paths:
    """The commands that reach the same target by each path, for one cipher."""

    def __init__(
        self,
        gateway: Gateway,
        folder: Path,
        bastion: OpenSSHTarget,
        default_gateway: Gateway | None = None,
    ) -> None:
        self.gateway = gateway
        #: A gateway with the default recording settings (the pamgate-default path).
        self.default_gateway = default_gateway
        self.account = os.environ.get("USER") or "root"
        self.key = client_certificate(gateway, folder, self.account)
        self.known_hosts = folder / "known_hosts"
        self.bastion = bastion
        self.mitm: tuple[int, Path, Path] | None = None

    def target_pid(self, path: str) -> int | None:
        """The target sshd that ``path`` reaches (its listener, the root of its tree)."""
        gateway = self.default_gateway if path == "pamgate-default" else self.gateway
        assert gateway is not None
        process = gateway.targets["web01"].process
        return process.pid if process is not None else None

    def middle_pid(self, path: str) -> int | None:
        """The process at the root of the middle hop's tree (None: there is no middle)."""
        if path == "pamgate":
            return self.gateway.process.pid
        if path == "pamgate-default":
            assert self.default_gateway is not None
            return self.default_gateway.process.pid
        if path == "-J":
            assert self.bastion.process is not None
            return self.bastion.process.pid
        return None

    def command(self, path: str, cipher: str, tty: bool) -> tuple[list[str], dict | None]:
        web01 = self.gateway.targets["web01"]
        options = base_options(self.key, self.known_hosts, cipher)
        flags = ["-tt"] if tty else []
        login = f"{self.account}@127.0.0.1"
        if path == "direct":
            return ["ssh", *flags, *options, "-p", str(web01.port), login], None
        if path == "-J":
            hop = f"ssh {' '.join(options)} -p {self.bastion.port} -W %h:%p {login}"
            return ["ssh", *flags, *options, "-o", f"ProxyCommand={hop}", "-p", str(web01.port),
                    login], None  # fmt: skip
        if path in PAMGATE_PATHS:
            gateway = self.gateway if path == "pamgate" else self.default_gateway
            assert gateway is not None
            user = gateway.make_user()
            through = gateway.ssh_command(f"{user.name}:web01", extra=("-c", cipher, *flags))
            return through, gateway.ssh_env(user)
        assert self.mitm is not None
        port, key, _ = self.mitm
        options = base_options(key, self.known_hosts, cipher)
        return ["ssh", *flags, *options, "-p", str(port), login], None


def measure(paths: Paths, path: str, cipher: str, mode: str, size: int) -> dict[str, float]:
    """One transfer of ``size`` bytes: seconds and bytes delivered."""
    command, env = paths.command(path, cipher, tty=mode == "pty")
    stdin = None
    if path == "ssh-mitm" and mode == "pty":
        # ssh-mitm hangs on `ssh -tt host cmd`; type the command into a shell instead.
        stdin = f"{payload_command(size)}; exit\n".encode()
    else:
        command = [*command, payload_command(size)]
    middle = paths.middle_pid(path)
    target = paths.target_pid(path)
    # Each tree's CPU when the first bytes arrived: client, middle (0 without one), target.
    relaying: list[float] = []
    helpers: list[int] = []  # the client's own children then (-J's ProxyCommand)

    def logged_in(client: int) -> None:
        helpers.extend(descendants(client))
        relaying.extend((
            tree_cpu_seconds(client),
            tree_cpu_seconds(middle) if middle else 0.0,
            tree_cpu_seconds(target) if target else 0.0,
        ))  # fmt: skip

    load = os.getloadavg()[0]
    # The client's whole CPU, its ProxyCommand's included, is known once it is reaped.
    clients_before = reaped_children_cpu_seconds()
    done = transfer(command, env, stdin, logged_in)
    reap(helpers)
    client_cpu = reaped_children_cpu_seconds() - clients_before
    if path != "ssh-mitm" and done.received < size:
        raise RuntimeError(
            f"{path} {mode}: {done.received} of {size} bytes arrived: {done.stderr!r}"
        )
    sample = {
        "seconds": done.streaming_seconds,
        "seconds_with_login": done.seconds,
        "bytes": done.received,
        "load_average": load,
    }
    if relaying:
        client_at_first, middle_at_first, target_at_first = relaying
        middle_cpu = 0.0
        if middle:
            # From the first byte until the middle is idle again (recording sealed): the
            # relay's cost, not the login's (an argon2 check alone is about half a CPU-second).
            middle_cpu = settled_cpu_seconds(middle) - middle_at_first
            sample["middle_cpu_seconds"] = middle_cpu
        if target and (middle or path == "direct"):
            # Every process the bytes pass through, from the first byte: what a machine running
            # them all pays, and what throughput follows when its cores are all busy.
            sample["path_cpu_seconds"] = (
                client_cpu - client_at_first + middle_cpu
                + settled_cpu_seconds(target) - target_at_first
            )  # fmt: skip
    return sample


def reaped_children_cpu_seconds() -> float:
    """User + system CPU of this process's children reaped so far (and of theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def gated_stream(
    command: list[str], env: dict[str, str] | None, size: int, ready: threading.Barrier
) -> int:
    """Log in and run a command that says it is ready, then waits for a line before it
    prints ``size`` bytes; the line is sent once ``ready`` lets every session through.
    Returns the payload bytes received (the ready mark not counted)."""
    # Without the line (the bench gave up on the others) the command prints nothing.
    remote = f"printf {READY_MARK.decode()} && read -r go && {payload_command(size)}"
    with subprocess.Popen(
        [*command, remote], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:  # fmt: skip
        assert process.stdin is not None and process.stdout is not None
        assert process.stderr is not None
        if process.stdout.read(len(READY_MARK)) != READY_MARK:
            ready.abort()  # the others must not wait for a session that never came
            raise RuntimeError(f"{command[:3]}... never got ready: {process.stderr.read()!r}")
        ready.wait()
        process.stdin.write(b"go\n")
        process.stdin.flush()
        received = 0
        while chunk := process.stdout.read1(1 << 20):
            received += len(chunk)
        process.stdin.close()
        process.wait(timeout=60)
    return received


def measure_aggregate(
    paths: Paths, path: str, cipher: str, sessions: int, size: int
) -> dict[str, float]:
    """``sessions`` exec transfers of ``size`` bytes at once, started together once every
    session has logged in: total bytes, wall seconds from the start to the last byte, and
    the middle hop's CPU over the same span."""
    commands = [paths.command(path, cipher, tty=False) for _ in range(sessions)]
    middle = paths.middle_pid(path)
    load = os.getloadavg()[0]
    # Every session and this thread: when it opens, all have logged in.
    ready = threading.Barrier(sessions + 1, timeout=120)
    received: list[int] = []

    def stream(command: list[str], env: dict[str, str] | None) -> None:
        try:
            received.append(gated_stream(command, env, size, ready))
        except (RuntimeError, threading.BrokenBarrierError) as exc:
            print(f"aggregate {path}: {exc}", file=sys.stderr, flush=True)

    threads = [threading.Thread(target=stream, args=pair) for pair in commands]
    for thread in threads:
        thread.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        for thread in threads:
            thread.join()
        raise RuntimeError(f"aggregate {path}: a session did not log in") from None
    started = time.perf_counter()
    cpu_before = tree_cpu_seconds(middle) if middle else 0.0
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    total = sum(received)
    if len(received) != sessions or total < sessions * size:
        raise RuntimeError(f"aggregate {path}: {total} of {sessions * size} bytes arrived")
    sample = {"seconds": seconds, "bytes": total, "load_average": load}
    if middle:
        sample["middle_cpu_seconds"] = settled_cpu_seconds(middle) - cpu_before
    return sample


def schedule(ciphers: list[str], *, with_mitm: bool) -> list[tuple[str, str, str]]:
    """(cipher, mode, path) in the order one run measures them: paths side by side."""
    return [
        (cipher, mode, path)
        for cipher in ciphers
        for mode in ("exec", "pty")
        for path in PATHS
        if path != "ssh-mitm" or (with_mitm and cipher in MITM_CIPHERS)
        if path != "pamgate-default" or mode == "exec"
    ]


def at_least_one(text: str) -> int:
    """An argparse type: a whole number of 1 or more."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {number}")
    return number


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--exec-megabytes", type=at_least_one, default=500)
    parser.add_argument("--pty-megabytes", type=at_least_one, default=200)
    parser.add_argument("--ciphers", default=",".join(CIPHERS))
    parser.add_argument("--repeat", type=at_least_one, default=3)
    parser.add_argument("--no-mitm", action="store_true", help="leave ssh-mitm out")
    parser.add_argument("--aggregate-sessions", type=at_least_one, default=8)
    parser.add_argument("--aggregate-megabytes", type=at_least_one, default=100, help="per session")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ciphers = [name for name in args.ciphers.split(",") if name]
    sizes = {"exec": args.exec_megabytes * 1024 * 1024, "pty": args.pty_megabytes * 1024 * 1024}
    runs: dict[str, list[dict[str, float]]] = {}
    mitm_note = "left out (--no-mitm)" if args.no_mitm else ""
    become_subreaper()  # so that every client process's CPU is counted (see measure)
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pamgate-relay-")))
        gateway = stack.enter_context(launch_gateway(folder / "gw", RECORD_EVERYTHING))
        default_gateway = stack.enter_context(launch_gateway(folder / "gw-default"))
        ca_pub = gateway.data_dir / "keys" / "upstream_ca.pub"
        bastion = OpenSSHTarget(folder / "bastion", free_port(), ca_pub)
        bastion.start()
        stack.callback(bastion.stop)
        paths = Paths(gateway, folder, bastion, default_gateway)
        if not args.no_mitm:
            try:
                paths.mitm = stack.enter_context(mitm_proxy(folder / "mitm", ca_pub))
            except MitmUnavailable as exc:
                mitm_note = f"unavailable: {exc}"
                print(f"ssh-mitm {mitm_note}", file=sys.stderr, flush=True)
        for run in range(args.repeat):
            for cipher, mode, path in schedule(ciphers, with_mitm=paths.mitm is not None):
                print(f"run {run + 1}/{args.repeat}: {cipher} {mode} {path} "
                      f"({sizes[mode] >> 20} MB)...", file=sys.stderr, flush=True)  # fmt: skip
                runs.setdefault(f"{cipher} {mode} {path}", []).append(
                    measure(paths, path, cipher, mode, sizes[mode])
                )
        mitm_recorded = recorded_bytes(paths.mitm[2]) if paths.mitm else 0
        aggregate = measure_aggregates(
            stack, folder, paths, ciphers[0], args.aggregate_sessions,
            args.aggregate_megabytes * 1024 * 1024, args.repeat,
        )  # fmt: skip
    figures = summarise(runs, sizes, ciphers)
    figures["aggregate"] = aggregate
    figures.update(
        runs=runs,
        megabytes={mode: size >> 20 for mode, size in sizes.items()},
        repeat=args.repeat,
        mitm={"note": mitm_note or "ok", "version": "6.0.1", "recorded_bytes": mitm_recorded,
              "ciphers": list(MITM_CIPHERS)},
    )  # fmt: skip
    print_tables(figures, ciphers)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def measure_aggregates(
    stack: ExitStack,
    folder: Path,
    paths: Paths,
    cipher: str,
    sessions: int,
    size: int,
    repeat: int,
) -> dict:
    """Aggregate throughput of ``sessions`` concurrent sessions: -J, and pamgate with the
    default settings with one relay process and with one per core (when the gateway
    accepts that)."""
    runs: dict[str, list[dict[str, float]]] = {}
    every_core: Paths | None = None
    note = "ok"
    try:
        gateway = stack.enter_context(
            launch_gateway(folder / "gw-every-core", EVERY_CORE)
        )
        every_core = Paths(gateway, folder / "gw-every-core", paths.bastion)
    except PamgateError as exc:
        note = f"not available: {exc}"
        print(f"pamgate with a relay process per core {note}", file=sys.stderr, flush=True)
    # (name, the gateways and targets, the path through them)
    candidates = [("-J", paths, "-J"), ("pamgate 1 worker", paths, "pamgate-default")]
    if every_core is not None:
        candidates.append(("pamgate N workers", every_core, "pamgate"))
    for run in range(repeat):
        for name, through, path in candidates:
            print(f"run {run + 1}/{repeat}: aggregate {sessions} x {size >> 20} MB {name}...",
                  file=sys.stderr, flush=True)  # fmt: skip
            runs.setdefault(name, []).append(
                measure_aggregate(through, path, cipher, sessions, size)
            )
    figures: dict = {
        "sessions": sessions, "megabytes_each": size >> 20, "cipher": cipher,
        "workers_n": os.cpu_count(), "workers_n_note": note, "runs": runs,
        "mb_per_s": {}, "cpu_s_per_gb": {},
    }  # fmt: skip
    for name, samples in runs.items():
        figures["mb_per_s"][name] = statistics.median(
            s["bytes"] / s["seconds"] / 1048576 for s in samples
        )
        figures["cpu_s_per_gb"][name] = statistics.median(
            s["middle_cpu_seconds"] / s["bytes"] * 1e9 for s in samples
        )
    return figures


def summarise(
    runs: dict[str, list[dict[str, float]]], sizes: dict[str, int], ciphers: list[str]
) -> dict:
    """Median MB/s per cipher, mode and path, the bytes lost, and pamgate's ratios."""
    rates: dict[str, float] = {}
    rates_with_login: dict[str, float] = {}
    lost: dict[str, int] = {}
    cpu_per_gb: dict[str, float] = {}
    path_cpu_per_gb: dict[str, float] = {}
    for name, samples in runs.items():
        mode = name.split()[1]
        rates[name] = statistics.median(s["bytes"] / s["seconds"] / 1048576 for s in samples)
        rates_with_login[name] = statistics.median(
            s["bytes"] / s["seconds_with_login"] / 1048576 for s in samples
        )
        lost[name] = max(sizes[mode] - int(s["bytes"]) for s in samples)
        if all("middle_cpu_seconds" in s for s in samples):
            cpu_per_gb[name] = statistics.median(
                s["middle_cpu_seconds"] / s["bytes"] * 1e9 for s in samples
            )
        if all("path_cpu_seconds" in s for s in samples):
            path_cpu_per_gb[name] = statistics.median(
                s["path_cpu_seconds"] / s["bytes"] * 1e9 for s in samples
            )
    ratios: dict[str, float] = {}
    for cipher in ciphers:
        for mode in ("exec", "pty"):
            for path in PAMGATE_PATHS:
                ours = rates.get(f"{cipher} {mode} {path}")
                for baseline in ("-J", "direct", "ssh-mitm"):
                    theirs = rates.get(f"{cipher} {mode} {baseline}")
                    if ours and theirs:
                        ratios[f"{cipher} {mode} {path}/{baseline}"] = ours / theirs
    load = [s["load_average"] for samples in runs.values() for s in samples]
    return {
        "mb_per_s": rates, "mb_per_s_with_login": rates_with_login, "bytes_lost": lost,
        "ratios": ratios, "cpu_s_per_gb": cpu_per_gb, "path_cpu_s_per_gb": path_cpu_per_gb,
        "load_average": {"min": min(load), "max": max(load)},
    }  # fmt: skip


def print_tables(figures: dict, ciphers: list[str]) -> None:
    rates, lost = figures["mb_per_s"], figures["bytes_lost"]
    megabytes = figures["megabytes"]
    with_login = figures["mb_per_s_with_login"]
    print(f"\nthroughput MB/s from the first byte to the last (with the logins), "
          f"median of {figures['repeat']} "
          f"(exec {megabytes['exec']} MB, pty {megabytes['pty']} MB)")  # fmt: skip
    print("| cipher | path | exec | pty |")
    print("|---|---|---|---|")
    for cipher in ciphers:
        for path in PATHS:
            cells = []
            for mode in ("exec", "pty"):
                name = f"{cipher} {mode} {path}"
                if name not in rates:
                    cells.append("-")
                    continue
                short = f" ({lost[name] >> 10} KiB lost)" if lost[name] > 0 else ""
                cells.append(f"{rates[name]:.1f} ({with_login[name]:.1f}){short}")
            print(f"| {cipher} | {path} | {cells[0]} | {cells[1]} |")
    print("\n| ratio (throughput) | exec | pty |")
    print("|---|---|---|")
    for cipher in ciphers:
        for path in PAMGATE_PATHS:
            for baseline in ("-J", "direct", "ssh-mitm"):
                cells = [figures["ratios"].get(f"{cipher} {mode} {path}/{baseline}")
                         for mode in ("exec", "pty")]  # fmt: skip
                if any(cells):
                    shown = [f"{c:.2f}" if c else "-" for c in cells]
                    print(f"| {cipher}: {path} / {baseline} | {shown[0]} | {shown[1]} |")
    print(f"ssh-mitm: {figures['mitm']['note']}")
    print("\n| CPU-s per GB: middle hop (whole path: client + middle + target) | exec | pty |")
    print("|---|---|---|")
    for cipher in ciphers:
        for path in ("direct", "-J", *PAMGATE_PATHS):
            cells = []
            for mode in ("exec", "pty"):
                name = f"{cipher} {mode} {path}"
                middle = figures["cpu_s_per_gb"].get(name)
                whole = figures["path_cpu_s_per_gb"].get(name)
                shown = [f"{figure:.1f}" if figure is not None else "-"
                         for figure in (middle, whole)]  # fmt: skip
                cells.append(f"{shown[0]} ({shown[1]})")
            print(f"| {cipher} {path} | {cells[0]} | {cells[1]} |")
    aggregate = figures["aggregate"]
    print(f"\naggregate, {aggregate['sessions']} sessions x {aggregate['megabytes_each']} MB, "
          f"{aggregate['cipher']}: " + ", ".join(
              f"{name} {rate:.1f} MB/s "
              f"({aggregate['cpu_s_per_gb'][name]:.1f} CPU-s/GB)"
              for name, rate in aggregate["mb_per_s"].items()
          ) + f"; N workers: {aggregate['workers_n_note']}")  # fmt: skip
    load = figures["load_average"]
    print(f"load average (1 min) during the runs: {load['min']:.1f} to {load['max']:.1f}")


if __name__ == "__main__":
    sys.exit(main())
