"""The workloads of the comparison, as plain records both sides execute. Stdlib only (see package doc).

A cell is one workload on one store at one size. Its JSON form is what the harness passes to each
side's process, so a workload means exactly the same thing to Accord and to AG2.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

Workload = Literal["w1", "w2", "w3", "w4", "w5"]

TITLES: dict[str, str] = {
    "w1": "W1 sequential",
    "w2": "W2 concurrent",
    "w3": "W3 discussion",
    "w4": "W4 reopen + read",
    "w5": "W5 idle channels",
}


@dataclass(frozen=True)
class Cell:
    """One workload on one store. Sizes mean:

    * w1 — ``n`` awaited sends in one 2-party conversation, timed until the peer received all;
    * w2 — ``channels`` conversations × ``n`` awaited sends each, all at once;
    * w3 — ``n`` turns round-robin among ``parties`` in one discussion, until all others received all;
    * w4 — reopen a hub whose store holds one channel with ``n`` envelopes, read it all, then
      ``tail_reads`` reads of its last 10;
    * w5 — ``n`` idle conversations open at once, spread over ``parties`` pairs of participants (as
      many agents with a few channels each, not two with thousands): RSS per channel and peak RSS.

    ``windows`` (``[(history length, sends), …]``) asks a side to measure a few windows at those
    history lengths instead of every send, for stores whose per-send cost grows with the log (see
    :func:`accord.benchmarks.measure.integrate_windows`). ``None`` runs every send.
    """

    workload: Workload
    store: str
    n: int
    channels: int = 1
    parties: int = 2
    tail_reads: int = 0
    windows: tuple[tuple[int, int], ...] | None = None
    #: Accord's SqliteStore durability; ignored by other stores
    durability: str = "process"
    #: where the side keeps its files (a fresh directory per cell, or the W4 history to reopen)
    path: str = ""
    #: the store URL of a networked store (nats: a stream of its own per cell, or the W4 history's)
    url: str = ""

    @property
    def sends(self) -> int:
        """Messages the workload sends in all (w1–w3)."""
        return self.n * self.channels

    def label(self) -> str:
        return f"{TITLES[self.workload]} · {self.store}"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Cell:
        data = json.loads(text)
        if data.get("windows") is not None:
            data["windows"] = tuple((int(o), int(w)) for o, w in data["windows"])
        return cls(**data)

    def with_(self, **changes: Any) -> Cell:
        return replace(self, **changes)


#: full sizes (issue 6) and the smoke sizes of ``--quick``
SIZES: dict[str, dict[str, dict[str, int]]] = {
    "full": {
        "w1": {"n": 20_000},
        "w2": {"n": 1_000, "channels": 100},
        "w3": {"n": 10_000, "parties": 5},
        "w4": {"n": 100_000, "tail_reads": 1_000},
        "w5": {"n": 10_000, "parties": 100},
    },
    "quick": {
        "w1": {"n": 200},
        "w2": {"n": 40, "channels": 5},
        "w3": {"n": 100, "parties": 5},
        "w4": {"n": 500, "tail_reads": 50},
        "w5": {"n": 200, "parties": 5},
    },
}

#: Accord's stores in the comparison. W4 needs a store that outlives the process. ``nats`` (one local
#: JetStream node, R1) and ``nats-r3`` (a local 3-node cluster, R3) run only when asked for: they need
#: the nats-server binary (the dev extra).
ACCORD_STORES: dict[str, tuple[str, ...]] = {
    "w1": ("memory", "sqlite", "nats", "nats-r3"),
    "w2": ("memory", "sqlite", "nats", "nats-r3"),
    "w3": ("memory", "sqlite", "nats"),
    "w4": ("sqlite", "nats"),
    "w5": ("memory", "sqlite"),
}
#: what ``accord bench`` runs unless ``--store`` says otherwise
DEFAULT_STORES: tuple[str, ...] = ("memory", "sqlite")


def cell(workload: Workload, store: str, *, quick: bool = False, **changes: Any) -> Cell:
    sizes = SIZES["quick" if quick else "full"][workload]
    return Cell(workload=workload, store=store, **{**sizes, **changes})


def accord_cells(*, quick: bool = False, durability: str = "process") -> list[Cell]:
    """Every Accord cell of the comparison, in workload order."""
    return [
        cell(w, store, quick=quick, durability=durability)  # type: ignore[arg-type]
        for w, stores in ACCORD_STORES.items()
        for store in stores
        if store in DEFAULT_STORES
    ]
