"""The floor benchmark (bench/floor.py) cannot rot, and its floor hub really stores what it claims to:
every envelope, and with ``+audit`` one chained audit record per envelope, in one SQLite file. No
timing is asserted: the figures belong in docs/PERFORMANCE.md."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _floor() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_floor", ROOT / "bench" / "floor.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_floor"] = module  # dataclasses look the module up while building the class
    spec.loader.exec_module(module)
    return module


def test_the_floor_hub_stores_every_envelope_and_its_audit_record(tmp_path: Path) -> None:
    floor = _floor()
    db = tmp_path / "floor.db"
    hub = floor.FloorHub("sqlite+audit", db)
    asyncio.run(floor.w2(hub, 7, channels=5))  # 35 rows and 35 audit rows: past one INSERT's 32
    asyncio.run(floor.w1(hub, 3))
    hub.db.close()
    con = sqlite3.connect(db)
    counts = dict(con.execute("SELECT stream = 'audit', COUNT(*) FROM log GROUP BY 1").fetchall())
    assert counts == {0: 38, 1: 38}
    seqs = [s for (s,) in con.execute("SELECT seq FROM log WHERE stream = 'thr_1' ORDER BY seq")]
    assert seqs == list(range(1, 11))  # thr_1 had 7 sends in W2, then W1's 3 continue it
    assert [s for (s,) in con.execute("SELECT seq FROM log WHERE stream = 'audit' ORDER BY id")] == list(
        range(1, 39)
    )
    env = json.loads(con.execute("SELECT data FROM log WHERE stream = 'thr_4' AND seq = 7").fetchone()[0])
    assert env["event_data"] == {"text": "message 6"} and env["sender_id"] == "a4"


def test_quick_run_reports_every_floor_and_each_target(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "floor.py"), "--quick", "--json"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    report = json.loads(out.stdout)
    floors = {(f["workload"], f["store"]): f for f in report["floors"]}
    assert set(floors) == {(w, s) for w in ("w1", "w2") for s in ("none", "memory", "sqlite", "sqlite+audit")}
    assert all(f["median"] > 0 and len(f["rates"]) == 1 for f in floors.values())
    # docs/perf/results.json is in the repository: each throughput target becomes sends/s
    targets = {t["target"]: t for t in report["targets"]}
    assert set(targets) == {"W1 >= 8x AG2 memory", "W1 >= 500x AG2 sqlite", "W2 >= 10x AG2 memory"}
    for t in targets.values():
        assert t["required"] > t["ag2"] > 0 and t["floor_over_required"] > 0


def test_bad_rounds_are_refused_before_anything_runs() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "floor.py"), "--rounds", "0"], capture_output=True, text=True
    )
    assert out.returncode == 2 and "--rounds must be at least 1" in out.stderr
