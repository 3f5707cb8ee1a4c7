"""Login to first command: pamgate (password + TOTP, fresh upstream certificate) vs OpenSSH.

Run:  .venv/bin/python -m bench.login_bench [--logins 10] [--json FILE]

Each login runs ``true`` and exits, one at a time:
- direct:  stock ssh → sshd, with a certificate from the CA the target trusts;
- pamgate: stock ssh → pamgate (keyboard-interactive password and TOTP code,
  answered by an askpass helper; policy check; a fresh per-session upstream
  certificate; recording; audit) → sshd.
A fresh user per pamgate login, since a TOTP code is accepted only once.
Reported: medians, and pamgate / direct (goal ≤ 2).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from bench.relay_bench import base_options, client_certificate, timed
from tests.support.gateway import launch_gateway


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--logins", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    account = os.environ.get("USER") or "root"
    direct_times, pamgate_times = [], []
    with tempfile.TemporaryDirectory(prefix="pamgate-login-bench-") as folder_name:
        folder = Path(folder_name)
        with launch_gateway(folder / "gw") as gateway:
            web01 = gateway.targets["web01"]
            key = client_certificate(gateway, folder, account)
            direct = ["ssh", *base_options(key, folder / "known_hosts"), "-p", str(web01.port),
                      f"{account}@127.0.0.1", "true"]  # fmt: skip
            timed(direct)  # warm-up: host key learnt, caches filled
            for _ in range(args.logins):
                direct_times.append(timed(direct))
                user = gateway.make_user()
                through = [*gateway.ssh_command(f"{user.name}:web01"), "true"]
                pamgate_times.append(timed(through, env=gateway.ssh_env(user)))
    figures = {
        "direct_median_s": statistics.median(direct_times),
        "pamgate_median_s": statistics.median(pamgate_times),
        "logins": args.logins,
    }
    figures["ratio"] = figures["pamgate_median_s"] / figures["direct_median_s"]
    print(f"login and run true, median of {args.logins}")
    print(f"direct   {figures['direct_median_s'] * 1000:7.0f} ms")
    print(f"pamgate  {figures['pamgate_median_s'] * 1000:7.0f} ms  (password + TOTP)")
    print(f"pamgate / direct: {figures['ratio']:.2f}  (goal <= 2)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
