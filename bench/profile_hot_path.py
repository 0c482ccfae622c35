"""Where one envelope's time goes: py-spy over a W2 cell (100 conversations × 1,000 concurrent sends).

    .venv/bin/python bench/profile_hot_path.py                    # SQLite store, default durability
    .venv/bin/python bench/profile_hot_path.py --store memory --top 25
    .venv/bin/python bench/profile_hot_path.py --workload w1      # 20,000 sequential sends instead

py-spy samples the cell's process from outside (no instrumentation overhead to skew the shares, unlike
cProfile); the raw stacks are folded here into the share of samples per area of the code (client,
link, hub, audit, protocol fold, store, the event loop) and per function, self time and inclusive.
The summary in docs/PERFORMANCE.md comes from this script.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from accord.benchmarks.cells import cell

#: (area, path fragment) in priority order: a frame belongs to the first area whose fragment it holds
AREAS = (
    ("benchmark driver", "accord/benchmarks/"),
    ("client (participant, human)", "accord/client/"),
    ("link (local, inbox)", "accord/link/"),
    ("audit chain", "accord/hub/audit.py"),
    ("hub (submit, commit, fan-out)", "accord/hub/"),
    ("protocol fold and checks", "accord/protocol/"),
    ("ids and envelope", "accord/model/"),
    ("store (append, group commit)", "accord/store/"),
    ("asyncio event loop", "asyncio/"),
    ("other threads (idle pool, SQLite checkpoints)", "threading.py"),
)
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^:]+):(?P<line>\d+)\)$")


def area_of(frame: str) -> str:
    for name, fragment in AREAS:
        if fragment in frame:
            return name
    return "other (imports, interpreter)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="w2", choices=("w1", "w2", "w3"))
    parser.add_argument("--store", default="sqlite", choices=("sqlite", "memory"))
    parser.add_argument("--top", type=int, default=15, help="functions listed by self time")
    parser.add_argument("--rate", type=int, default=400, help="samples per second")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    work = Path(tempfile.mkdtemp(prefix="accord-profile-"))
    try:
        raw = work / "stacks.txt"
        c = cell(args.workload, args.store, path=str(work / "data"))
        subprocess.run(
            [py_spy, "record", "-r", str(args.rate), "-f", "raw", "-o", str(raw), "--",
             sys.executable, "-m", "accord.benchmarks.side", "run", c.to_json()],
            check=True, capture_output=True,
        )  # fmt: skip
        total = 0
        self_time: collections.Counter[str] = collections.Counter()
        inclusive: collections.Counter[str] = collections.Counter()
        areas: collections.Counter[str] = collections.Counter()
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            n = int(count)
            total += n
            frames = [_short(f) for f in stack.split(";")]
            leaf = frames[-1]
            self_time[leaf] += n
            # the area of a sample: the innermost frame in Accord's code, else the leaf's
            ours = [f for f in frames if "accord/" in f and "accord/benchmarks/" not in f]
            areas[area_of(ours[-1] if ours and "asyncio/" not in leaf else leaf)] += n
            for f in set(frames):
                inclusive[f] += n
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.workload.upper()} on {args.store}: {total:,} samples at {args.rate}/s\n")
    print("share of samples by area (innermost Accord frame; event-loop leaves count as the loop):")
    for name, n in areas.most_common():
        print(f"  {100 * n / total:5.1f}%  {name}")
    print(f"\ntop {args.top} functions by self time:")
    for frame, n in self_time.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {frame}")
    print(f"\ntop {args.top} Accord functions by inclusive time:")
    ours = [(f, n) for f, n in inclusive.most_common() if "accord/" in f and "benchmarks" not in f]
    for frame, n in ours[: args.top]:
        print(f"  {100 * n / total:5.1f}%  {frame}")
    return 0


def _short(frame: str) -> str:
    m = FRAME.match(frame)
    if not m:
        return frame
    path = m["file"]
    cut = path.find("accord/")
    short = path[cut:] if cut >= 0 else "/".join(path.split("/")[-2:])
    return f"{m['func']} ({short}:{m['line']})"


if __name__ == "__main__":
    sys.exit(main())
