"""Machine lane: certificate logins running ``true``, per second, next to OpenSSH in the same run.

Run:  .venv/bin/python -m bench.machine_bench [--logins 400] [--concurrency 20] [--json FILE]

Both paths use the stock ``ssh`` client with a short-lived certificate and
run ``true`` on the same loopback sshd:

- direct:  ssh → sshd, a certificate from the CA the target trusts;
- pamgate: ssh → pamgate machine lane → sshd. pamgate checks the machine-CA
  certificate against the NHI's registration, audits the login and the
  command in the machine trail, mints a fresh upstream certificate, records
  the exec, and closes it out (sealed recording, ``session.end``).

Each path runs ``--logins`` connections, ``--concurrency`` at a time. Reported:
logins per second, and the median and p99 time of one login-and-exec.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.relay_bench import client_certificate
from gateway.config import load_config
from gateway.domain.machines.registry import ScopeTarget
from gateway.services import GatewayServices
from tests.support.gateway import Gateway, launch_gateway

NHI = "svc-bench"


def ssh_options(key: Path, known_hosts: Path) -> list[str]:
    return [
        "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
        "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
    ]  # fmt: skip


def run_logins(command: list[str], logins: int, concurrency: int) -> dict[str, float]:
    """Run ``command`` ``logins`` times, ``concurrency`` at once; rate and latencies."""

    def one(_: int) -> float:
        started = time.perf_counter()
        result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"{command[-2]} failed: {result.stderr[-300:]!r}")
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = sorted(pool.map(one, range(logins)))
    elapsed = time.perf_counter() - started
    return {
        "logins_per_second": logins / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


def machine_certificate(gateway: Gateway, folder: Path, ttl: int) -> Path:
    """Register the NHI and sign it a certificate, as an administrator would."""
    services = GatewayServices.open(load_config(gateway.config_path))
    try:
        services.machines.add(
            NHI, actor="bench", kind="service-account", owner="bench", tech_owner="bench",
            purpose="benchmark", targets=[ScopeTarget("web01", "root")], commands=["true"],
            max_ttl_seconds=ttl,
        )  # fmt: skip
        key = folder / "nhi_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        signed = services.machine_credentials.issue(
            NHI, key.with_suffix(".pub").read_text(), ttl, actor="bench"
        )
        key.with_name(key.name + "-cert.pub").write_text(signed.certificate + "\n")
        return key
    finally:
        services.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--logins", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    account = os.environ.get("USER") or "root"
    with tempfile.TemporaryDirectory(prefix="pamgate-machine-bench-") as folder_name:
        folder = Path(folder_name)
        with launch_gateway(folder / "gw") as gateway:
            web01 = gateway.targets["web01"]
            direct_key = client_certificate(gateway, folder, account)
            nhi_key = machine_certificate(gateway, folder, ttl=3600)
            known_hosts = folder / "known_hosts"
            direct = [
                "ssh", *ssh_options(direct_key, known_hosts), "-p", str(web01.port),
                f"{account}@127.0.0.1", "true",
            ]  # fmt: skip
            through = [
                "ssh", *ssh_options(nhi_key, known_hosts), "-p", str(gateway.machine_port),
                f"{NHI}:web01@127.0.0.1", "true",
            ]  # fmt: skip
            # Warm up both paths (host keys learnt, caches filled) before measuring.
            run_logins(direct, 5, 5)
            run_logins(through, 5, 5)
            figures = {
                "direct": run_logins(direct, args.logins, args.concurrency),
                "pamgate": run_logins(through, args.logins, args.concurrency),
            }
    figures["ratio_logins_per_second"] = (
        figures["pamgate"]["logins_per_second"] / figures["direct"]["logins_per_second"]
    )
    figures["settings"] = {"logins": args.logins, "concurrency": args.concurrency}
    print(f"machine lane, {args.logins} logins running true, {args.concurrency} at a time")
    print(f"{'path':<10} {'logins/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for name in ("direct", "pamgate"):
        row = figures[name]
        print(f"{name:<10} {row['logins_per_second']:>9.1f} {row['p50_ms']:>8.1f} "
              f"{row['p99_ms']:>8.1f}")  # fmt: skip
    print(f"pamgate / direct logins per second: {figures['ratio_logins_per_second']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
