"""The benchmarks still run: each one's ``--quick`` mode, as a subprocess, end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_ws_fanout_quick() -> None:
    """A real `accord serve`, REST set-up, WebSocket clients in a worker process, both measurements."""
    out = subprocess.run(
        [sys.executable, str(BENCH / "ws_fanout.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "A round 1:" in out.stdout and "B round 1 at 200/s:" in out.stdout, out.stdout
    assert "Accord WebSocket fan-out, 10 clients in 2 threads (medians)" in out.stdout, out.stdout


def test_routine_dispatch_quick() -> None:
    """An in-process sqlite hub, the routine worker with a probe model: A, B and C, end to end."""
    out = subprocess.run(
        [sys.executable, str(BENCH / "routine_dispatch.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    for line in ("A round 1 at 200/s:", "B round 1 at 200/s:", "C1 round 1:", "C2 round 1:"):
        assert line in out.stdout, out.stdout
    assert "Accord routine dispatch, in-process sqlite hub (medians of rounds)" in out.stdout, out.stdout


def test_slow_reader_quick() -> None:
    """A real `accord serve`, four raw sockets that never read and one reading client: the reader gets
    everything, and the exit status says the memory target was met."""
    out = subprocess.run(
        [sys.executable, str(BENCH / "slow_reader.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "round 1:" in out.stdout and "300 delivered" in out.stdout, out.stdout


def test_nats_batch_cost_quick() -> None:
    """A local nats-server: plain publish against atomic batches, and NatsStore appends."""
    out = subprocess.run(
        [sys.executable, str(BENCH / "nats_batch_cost.py"), "--quick", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "JetStream commit cost, R1, medians of 1 rounds:" in out.stdout, out.stdout
    for line in ("plain publish:", "batch of 1:", "batch of 2:", "appends/s"):
        assert line in out.stdout, out.stdout
