"""The relay's cost, this tree against an earlier commit, in one run: an A/B for hot-path work.

Run:  .venv/bin/python -m bench.relay_ab --base REV [--cipher NAME] [--megabytes 300]
          [--rounds 6] [--json FILE]

Two gateways with the default settings, one running the code at ``REV`` (a
git worktree of it, removed afterwards) and one running this tree, each
relay one exec session at a time moving the same output (``head -c ... |
base64``) from a loopback sshd to a stock ``ssh``; rounds alternate which
goes first. Reported per side: the median of the middle hop's CPU-seconds
per GB (the gateway's process tree, from the kernel's accounting, from the
first byte until it is idle again: bench/proctree.py) and of MB/s from the
first byte to the last, and the ratios after/before. Both sides meet the
same machine state round by round, so the ratio means something on a noisy
machine where two separate runs of ``bench.relay_bench`` would not.

The base's gateway starts from its worktree (``python -m gateway.cli`` puts
the working directory first on its path) with this tree's test config: a
base older than a config setting this tree writes will not start, and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bench.proctree import settled_cpu_seconds, tree_cpu_seconds
from bench.relay_bench import at_least_one, payload_command, transfer
from tests.support.gateway import Gateway, launch_gateway

ROOT = Path(__file__).resolve().parents[1]
SIDES = ("before", "after")


@contextmanager
def worktree_at(revision: str) -> Iterator[Path]:
    """A detached git worktree of ``revision``, removed on the way out."""
    folder = Path(tempfile.mkdtemp(prefix="pamgate-ab-base-"))
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(folder), revision],
        check=True,
    )
    try:
        yield folder
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(folder)], check=False
        )


@contextmanager
def working_directory(folder: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def one_round(gateway: Gateway, cipher: str, size: int) -> dict[str, float]:
    """One exec session through ``gateway``: CPU-seconds per GB of its tree, and MB/s."""
    user = gateway.make_user()  # a fresh user per login: TOTP codes are single-use
    command = gateway.ssh_command(f"{user.name}:web01", extra=("-c", cipher))
    env = gateway.ssh_env(user)
    pid = gateway.process.pid
    at_first_byte: list[float] = []
    done = transfer(
        [*command, payload_command(size)], env, None,
        lambda _client: at_first_byte.append(tree_cpu_seconds(pid)),
    )  # fmt: skip
    if done.received < size or not at_first_byte:
        raise RuntimeError(f"{done.received} of {size} bytes arrived: {done.stderr!r}")
    cpu = settled_cpu_seconds(pid) - at_first_byte[0]
    return {
        "cpu_s_per_gb": cpu / done.received * 1e9,
        "mb_per_s": done.received / done.streaming_seconds / 1e6,
        "load_average": os.getloadavg()[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, help="the commit to compare with (any git rev)")
    parser.add_argument("--cipher", default="aes128-gcm@openssh.com", help="the client's cipher")
    parser.add_argument("--megabytes", type=at_least_one, default=300, help="per session")
    parser.add_argument("--rounds", type=at_least_one, default=6)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    size = args.megabytes * 1024 * 1024
    samples: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
    with ExitStack() as stack:
        base = stack.enter_context(worktree_at(args.base))
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pamgate-ab-")))
        with working_directory(base):
            before = stack.enter_context(launch_gateway(folder / "before"))
        gateways = {
            "before": before,
            "after": stack.enter_context(launch_gateway(folder / "after")),
        }
        for number in range(args.rounds):
            order = SIDES if number % 2 == 0 else SIDES[::-1]
            for side in order:
                sample = one_round(gateways[side], args.cipher, size)
                samples[side].append(sample)
                progress = f"{sample['mb_per_s']:.0f} MB/s, {sample['cpu_s_per_gb']:.2f} CPU-s/GB"
                print(f"round {number + 1}/{args.rounds} {side}: {progress}", file=sys.stderr)
    medians = {
        side: {key: statistics.median(s[key] for s in samples[side]) for key in samples[side][0]}
        for side in SIDES
    }
    figures = {
        "base": args.base, "cipher": args.cipher, "megabytes": args.megabytes,
        "rounds": args.rounds, "medians": medians, "samples": samples,
        "cpu_ratio": medians["after"]["cpu_s_per_gb"] / medians["before"]["cpu_s_per_gb"],
        "throughput_ratio": medians["after"]["mb_per_s"] / medians["before"]["mb_per_s"],
    }  # fmt: skip
    print(f"{args.cipher}, {args.megabytes} MB exec, medians of {args.rounds} rounds "
          f"(load average {medians['after']['load_average']:.1f}):")  # fmt: skip
    for side in SIDES:
        label = f"{side} ({args.base})" if side == "before" else f"{side} (this tree)"
        print(f"  {label}: {medians[side]['cpu_s_per_gb']:.2f} CPU-s/GB, "
              f"{medians[side]['mb_per_s']:.0f} MB/s")  # fmt: skip
    print(f"  after/before: CPU per GB {figures['cpu_ratio']:.2f}, "
          f"throughput {figures['throughput_ratio']:.2f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
