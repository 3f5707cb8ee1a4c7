"""Recording seek: the screen at a random moment of a large recording.

Run:  .venv/bin/python -m bench.seek_bench [--megabytes 1024] [--seeks 200]
                                          [--shape dense|spread] [--json FILE]

Writes a synthetic asciicast of the given size, builds its index once (as
``pamgate replay`` and the console do, cached next to the recording), then
times ``screen_at`` at random moments and reports the median and p99.
Goal: p99 ≤ 100 ms.

Shapes: ``dense`` (the default) is what ``seq 1 100000000`` produces through
the gateway: 32 KB output events back to back, about 60 MB per second of
recording, so a second of recording holds tens of megabytes. ``spread`` is a
shell-like log tail: one short event every 10 ms with colours, prompts and
full-screen episodes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from recordings.player import RecordingIndex, screen_at

LINE = "\x1b[32muser@web01\x1b[0m:~$ tail app.log\r\n{n:>10} GET /api/items?page={n} 200 {ms}ms\r\n"


#: Output characters per event, and events per second of recording, of the dense shape.
DENSE_EVENT = 32 * 1024
DENSE_EVENTS_PER_SECOND = 2000


def write_dense_recording(path: Path, megabytes: int) -> None:
    """A plain asciicast of about ``megabytes`` MB of ``seq`` output, 32 KB per event."""
    target = megabytes * 1024 * 1024
    with path.open("w", encoding="utf-8") as out:
        out.write(json.dumps({"version": 2, "width": 80, "height": 24}) + "\n")
        written, number, events, pending = 0, 1, 0, ""
        while written < target:
            while len(pending) < DENSE_EVENT:
                pending += "".join(f"{n}\r\n" for n in range(number, number + 4096))
                number += 4096
            data, pending = pending[:DENSE_EVENT], pending[DENSE_EVENT:]
            events += 1
            line = json.dumps([round(events / DENSE_EVENTS_PER_SECOND, 6), "o", data]) + "\n"
            out.write(line)
            written += len(line)


def write_recording(path: Path, megabytes: int) -> None:
    """A plain asciicast of about ``megabytes`` MB, one output event every 10 ms."""
    target = megabytes * 1024 * 1024
    with path.open("w", encoding="utf-8") as out:
        out.write(json.dumps({"version": 2, "width": 120, "height": 40}) + "\n")
        written, n, moment = 0, 0, 0.0
        while written < target:
            n += 1
            moment += 0.01
            if n % 50_000 == 0:  # now and then a full-screen program, then back
                data = "\x1b[?1049h\x1b[2J top - load 0.01\r\n\x1b[?1049l"
            else:
                data = LINE.format(n=n, ms=n % 997)
            line = json.dumps([round(moment, 3), "o", data]) + "\n"
            out.write(line)
            written += len(line)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--megabytes", type=int, default=1024)
    parser.add_argument("--seeks", type=int, default=200)
    parser.add_argument("--shape", choices=("dense", "spread"), default="dense")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pamgate-seek-bench-") as folder:
        path = Path(folder) / "big.cast"
        started = time.perf_counter()
        (write_dense_recording if args.shape == "dense" else write_recording)(path, args.megabytes)
        written = time.perf_counter() - started
        started = time.perf_counter()
        index = RecordingIndex.build(path)
        indexed = time.perf_counter() - started
        moments = [random.uniform(0, index.duration) for _ in range(args.seeks)]
        seeks = []
        for moment in moments:
            started = time.perf_counter()
            screen_at(path, index, moment)
            seeks.append(time.perf_counter() - started)
    seeks.sort()
    figures = {
        "megabytes": args.megabytes,
        "shape": args.shape,
        "load_average_1m": os.getloadavg()[0],
        "index_build_s": indexed,
        "write_s": written,
        "seek_median_ms": statistics.median(seeks) * 1000,
        "seek_p99_ms": seeks[min(len(seeks) - 1, int(len(seeks) * 0.99))] * 1000,
        "seeks": args.seeks,
    }
    print(
        f"{args.shape} recording of {args.megabytes} MB: index built once in {indexed:.1f} s"
        f" ({len(index.points)} samples); load average {figures['load_average_1m']:.2f}"
    )
    print(f"seek to a random moment: median {figures['seek_median_ms']:.1f} ms, "
          f"p99 {figures['seek_p99_ms']:.1f} ms  (goal <= 100 ms)")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
