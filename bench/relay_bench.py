"""Relay throughput: pamgate (recording on) side by side with OpenSSH, in the same run.

Run:  .venv/bin/python -m bench.relay_bench [--megabytes 200] [--repeat 3] [--json FILE]

Paths measured, each moving the same bytes from the same loopback sshd:
- direct:  stock ssh → sshd (a certificate from the same CA)
- -J:      stock ssh → sshd (bastion) → sshd, end-to-end encrypted (cannot record)
- pamgate: stock ssh → pamgate → sshd, recording every byte
- pamgate, payload off: the same with exec_payload_cap_bytes = 0 (digests and
  counts only), which gives the cost of recording: on / off
For exec and through a pty (pty sessions are always recorded whole), both
moving N MB of base64 text (``head -c ... /dev/zero | base64 -w 0``).
Each login through pamgate uses a fresh user (TOTP codes are single-use).
Medians of --repeat runs; report the ratios: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway.openssh_target import OpenSSHTarget, free_port
from tests.conftest import Gateway, launch_gateway

CIPHER = "chacha20-poly1305@openssh.com"


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


def base_options(key: Path, known_hosts: Path) -> list[str]:
    return [
        "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
        "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "LogLevel=ERROR", "-c", CIPHER, "-o", "BatchMode=yes",
    ]  # fmt: skip


def timed(command: list[str], env: dict[str, str] | None = None, expect: int = 0) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        command, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=600
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0 or (expect and len(result.stdout) < expect):
        raise RuntimeError(f"{command[:3]}... failed: {result.stderr[-500:]!r}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    size = args.megabytes * 1024 * 1024
    account = os.environ.get("USER") or "root"
    # Text, as terminals and most command output carry: NUL bytes would cost JSON
    # six bytes each in the recording and measure the escaping, not the relay.
    exec_command = f"head -c {size * 3 // 4} /dev/zero | base64 -w 0"
    pty_command = f"head -c {size * 3 // 4} /dev/zero | base64 -w 0"
    results: dict[str, list[float]] = {}
    everything = "\n[recordings]\nexec_payload_cap_bytes = 1099511627776\n"
    nothing = "\n[recordings]\nexec_payload_cap_bytes = 0\n"
    with (
        tempfile.TemporaryDirectory() as folder_name,
        launch_gateway(Path(folder_name) / "on", everything) as gateway,
        launch_gateway(Path(folder_name) / "off", nothing) as unrecorded,
    ):
        folder = Path(folder_name)
        web01 = gateway.targets["web01"]
        bastion = OpenSSHTarget(folder / "bastion", free_port(),
                                gateway.data_dir / "keys" / "upstream_ca.pub")  # fmt: skip
        bastion.start()
        try:
            key = client_certificate(gateway, folder, account)
            options = base_options(key, folder / "known_hosts")
            direct = ["ssh", *options, "-p", str(web01.port), f"{account}@127.0.0.1"]
            hop = f"ssh {' '.join(options)} -p {bastion.port} -W %h:%p {account}@127.0.0.1"
            jump = ["ssh", *options, "-o", f"ProxyCommand={hop}",
                    "-p", str(web01.port), f"{account}@127.0.0.1"]  # fmt: skip
            for run in range(args.repeat):
                print(f"run {run + 1}/{args.repeat}...", file=sys.stderr, flush=True)
                for mode, command, expect in (
                    ("exec", exec_command, size),
                    ("pty", pty_command, 0),
                ):
                    tty = ["-tt"] if mode == "pty" else []
                    results.setdefault(f"direct {mode}", []).append(
                        timed([*direct[:1], *tty, *direct[1:], command], expect=expect)
                    )
                    results.setdefault(f"-J {mode}", []).append(
                        timed([*jump[:1], *tty, *jump[1:], command], expect=expect)
                    )
                    user = gateway.make_user()
                    through = gateway.ssh_command(f"{user.name}:web01", extra=("-c", CIPHER, *tty))
                    results.setdefault(f"pamgate {mode}", []).append(
                        timed([*through, command], env=gateway.ssh_env(user), expect=expect)
                    )
                    if mode == "exec":
                        user = unrecorded.make_user()
                        through = unrecorded.ssh_command(f"{user.name}:web01", extra=("-c", CIPHER))
                        results.setdefault("pamgate-off exec", []).append(
                            timed([*through, command], env=unrecorded.ssh_env(user), expect=expect)
                        )
        finally:
            bastion.stop()
    medians = {name: statistics.median(times) for name, times in results.items()}
    megabytes = {"exec": args.megabytes, "pty": args.megabytes}
    print(f"\n| path ({CIPHER}) | exec MB/s | pty MB/s |")
    print("|---|---|---|")
    for path in ("direct", "-J", "pamgate"):
        print(
            f"| {path} | {megabytes['exec'] / medians[f'{path} exec']:.0f} | "
            f"{megabytes['pty'] / medians[f'{path} pty']:.0f} |"
        )
    print("\n| ratio (throughput) | exec | pty | goal |")
    print("|---|---|---|---|")
    for baseline in ("-J", "direct"):
        ratios = [medians[f"{baseline} {m}"] / medians[f"pamgate {m}"] for m in ("exec", "pty")]
        goal = ">= 1.0" if baseline == "-J" else "-"
        print(f"| pamgate / {baseline} | {ratios[0]:.2f} | {ratios[1]:.2f} | {goal} |")
    on_off = medians["pamgate-off exec"] / medians["pamgate exec"]
    print(f"| recording on / payload off (exec) | {on_off:.2f} | - | - |")
    if args.json:
        args.json.write_text(
            json.dumps({"megabytes": args.megabytes, "seconds": results}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
