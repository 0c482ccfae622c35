"""The figures each workload reports, which way is better, and how to print them (shared by
``accord bench`` and the comparison's report)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .measure import CDF_POINTS


def per_s(v: float) -> str:
    return f"{v:,.0f}/s"


def secs(v: float) -> str:
    return f"{v * 1e3:,.3f} ms" if v < 0.1 else f"{v:,.2f} s"


def kib(v: float) -> str:
    return f"{v / 1024:,.1f} KiB"


def mib(v: float) -> str:
    return f"{v / 2**20:,.0f} MiB"


@dataclass(frozen=True)
class Figure:
    key: str
    name: str
    higher_is_better: bool
    fmt: Callable[[float], str]

    def of(self, result: dict[str, Any]) -> float:
        """This figure in one cell's result (latency percentiles come from its CDF)."""
        if self.key in ("p50", "p99"):
            return float(result["latency_pcts"][CDF_POINTS.index(50.0 if self.key == "p50" else 99.0)])
        return float(result[self.key])


FIGURES: dict[str, tuple[Figure, ...]] = {
    "w1": (
        Figure("throughput", "sends/s", True, per_s),
        Figure("p50", "latency p50", False, secs),
        Figure("p99", "latency p99", False, secs),
    ),
    "w2": (Figure("throughput", "sends/s", True, per_s),),
    "w3": (Figure("throughput", "turns/s", True, per_s),),
    "w4": (
        Figure("seconds", "reopen + full read", False, secs),
        Figure("tail_read_s", "read last 10", False, secs),
    ),
    "w5": (
        Figure("rss_per_channel", "RSS per idle channel", False, kib),
        Figure("rss_peak", "peak RSS", False, mib),
    ),
}
