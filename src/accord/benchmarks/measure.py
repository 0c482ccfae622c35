"""Process measurements shared by both sides of the comparison. Stdlib only: AG2's side loads this
file by path from its own virtual environment."""

from __future__ import annotations

import asyncio
import gc
import resource
import statistics
import time
from collections.abc import Sequence
from typing import Any

_PAGE = 4096


def rss_bytes() -> int:
    """Resident set size now (Linux ``/proc/self/statm``), after a full collection.

    The collection makes a before/after difference measure live objects, not garbage waiting for
    the next generation-2 pass.
    """
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def peak_rss_bytes() -> int:
    """Peak RSS of this process so far (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


#: the percentiles kept for latency CDFs: 0..99 in steps of 1, then the far tail
CDF_POINTS: tuple[float, ...] = (*(float(p) for p in range(100)), 99.5, 99.9, 100.0)


def percentiles(samples: Sequence[float], points: Sequence[float] = CDF_POINTS) -> list[float]:
    """Nearest-rank percentiles of ``samples`` (seconds in, seconds out)."""
    if not samples:
        return []
    ordered = sorted(samples)
    last = len(ordered) - 1
    return [ordered[min(last, round(p / 100 * last))] for p in points]


def integrate_windows(points: Sequence[tuple[float, float]], total: int) -> float:
    """Estimated seconds for ``total`` sends from per-send costs measured at a few history lengths.

    ``points`` are ``(history length at the window's middle, seconds per send)``. The cost is taken
    as linear between measured points and flat beyond the first and last, and integrated over
    ``[0, total]``: exact when the cost grows linearly with the history, which is what a store that
    rewrites a channel's whole log on every append does.
    """
    if not points:
        raise ValueError("no windows measured")
    pts = sorted(points)
    xs = [0.0] + [x for x, _ in pts] + [float(total)]
    ys = [pts[0][1]] + [y for _, y in pts] + [pts[-1][1]]
    return sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(len(xs) - 1))


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


class Arrivals:
    """Counts the text envelopes a peer receives, with the arrival time of each; ``done`` is set once
    ``target`` have arrived. ``expect`` re-arms it for the next window of a windowed run."""

    def __init__(self, target: int, text_type: str) -> None:
        self.target = target
        self.text_type = text_type
        self.times: list[float] = []
        self.done = asyncio.Event()

    def __call__(self, env: Any) -> None:
        if env.event_type == self.text_type:
            self.times.append(time.perf_counter())
            if len(self.times) >= self.target:
                self.done.set()

    def expect(self, more: int) -> None:
        self.target = len(self.times) + more
        self.done.clear()
