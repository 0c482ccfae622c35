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
