"""The comparison harness cannot rot: its ``--quick`` mode end to end (AG2 in its own virtual
environment, both sides, table and plots), ``accord bench --quick``, and the arithmetic they rely on.
No timing is asserted here: benchmarks are noisy, and their figures belong in PERFORMANCE.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from accord.benchmarks.cells import Cell, accord_cells, cell
from accord.benchmarks.measure import integrate_windows, percentiles

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def test_cells_round_trip_through_json_with_their_windows() -> None:
    c = cell("w1", "sqlite", windows=((0, 40), (19_960, 40)), path="/tmp/x")
    back = Cell.from_json(c.to_json())
    assert back == c and back.windows == ((0, 40), (19_960, 40))
    assert [(c.workload, c.store) for c in accord_cells()] == [
        ("w1", "memory"), ("w1", "sqlite"), ("w2", "memory"), ("w2", "sqlite"), ("w3", "memory"),
        ("w3", "sqlite"), ("w4", "sqlite"), ("w5", "memory"), ("w5", "sqlite"),
    ]  # fmt: skip
    assert cell("w2", "memory").sends == 100_000


def test_window_integration_is_exact_for_flat_and_linear_costs() -> None:
    # flat: 2 ms a send, measured anywhere → 20,000 sends take 40 s
    assert integrate_windows([(200, 0.002), (10_000, 0.002)], 20_000) == pytest.approx(40.0)
    # linear: cost(n) = 1 ms + 1 µs × n, measured at 3 points → ∫0^N = N·1e-3 + N²/2·1e-6
    cost = [(x, 1e-3 + 1e-6 * x) for x in (0.0, 10_000.0, 20_000.0)]
    assert integrate_windows(cost, 20_000) == pytest.approx(20_000 * 1e-3 + 20_000**2 / 2 * 1e-6)
    with pytest.raises(ValueError):
        integrate_windows([], 10)


def test_percentiles_are_nearest_rank() -> None:
    samples = [float(i) for i in range(1, 101)]
    pcts = percentiles(samples, (0.0, 50.0, 99.0, 100.0))
    assert pcts == [1.0, 51.0, 99.0, 100.0]
    assert percentiles([]) == []


def test_accord_bench_quick_runs_every_cell() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "accord.cli", "bench", "--quick", "--rounds", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    results = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert {(r["cell"]["workload"], r["cell"]["store"]) for r in results} == {
        (c.workload, c.store) for c in accord_cells()
    }
    for r in results:
        assert r["system"] == "accord" and r["durability"] and r["fsync"]
        if r["cell"]["workload"] in ("w1", "w2", "w3"):
            assert r["throughput"] > 0
    w4 = next(r for r in results if r["cell"]["workload"] == "w4")
    assert w4["envelopes_read"] >= 500 and w4["tail_read_s"] > 0


QUICK_BENCH = [sys.executable, "-m", "accord.cli", "bench", "--quick", "--rounds", "1", "--json"]


def test_accord_bench_runs_on_jetstream_nodes_it_starts_itself() -> None:
    out = subprocess.run(
        [*QUICK_BENCH, "--store", "nats,nats-r3", "--only", "w1,w2,w4"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    results = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert sorted((r["cell"]["workload"], r["cell"]["store"]) for r in results) == [
        ("w1", "nats"),
        ("w1", "nats-r3"),
        ("w2", "nats"),
        ("w2", "nats-r3"),
        ("w4", "nats"),
    ]
    assert all(r["durability"] and r["fsync"] for r in results)
    w4 = next(r for r in results if r["cell"]["workload"] == "w4")
    assert w4["envelopes_read"] >= 500


def test_compare_quick_writes_the_table_and_the_plots(tmp_path: Path) -> None:
    """Installs ag2==1.2.1 into bench/compare/.venv-ag2 on first use (from the package registry)."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compare" / "run.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    data = json.loads((tmp_path / "results.json").read_text())
    seen = {(r["system"], r["cell"]["workload"], r["cell"]["store"]) for r in data["results"]}
    for w in ("w1", "w2", "w3", "w5"):
        assert {("accord", w, "memory"), ("accord", w, "sqlite")} <= seen
        assert {("ag2", w, "memory"), ("ag2", w, "sqlite"), ("ag2", w, "disk")} <= seen
    assert {("accord", "w4", "sqlite"), ("ag2", "w4", "sqlite"), ("ag2", "w4", "disk")} <= seen
    for r in data["results"]:
        assert r["durability"] and r["fsync"], r  # every row states its durability
    assert data["meta"]["machine"]["cores"] >= 1
    table = (tmp_path / "table.md").read_text()
    assert "| W1 sequential (n=200) | sends/s | sqlite | memory |" in table
    for target in ("≥ 8×", "≥ 500×", "≥ 10×", "≥ 100×", "≤ 0.5×"):
        assert target in table, target
    for name in ("throughput.png", "latency_cdf.png", "memory_per_channel.png", "reopen.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG, name


def test_bad_arguments_are_refused_before_anything_runs() -> None:
    bench = subprocess.run(
        [sys.executable, "-m", "accord.cli", "bench", "--only", "w9"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert bench.returncode == 2 and "w9" in bench.stderr, bench.stderr
    for args in (["--rounds", "-1"], ["--only", "w9"], ["--w5-channels", "0"]):
        out = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "compare" / "run.py"), *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert out.returncode == 2 and "error:" in out.stderr, (args, out.stderr)
