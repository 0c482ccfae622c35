"""One cell in this process: ``python -m accord.benchmarks.side run|build CELL_JSON`` prints its result.

Both ``accord bench`` and the comparison harness start one such process per cell, so every cell
starts with a fresh heap and its peak RSS is its own.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from .cells import Cell
from .workloads import build_history, run_cell


def run_in_subprocess(action: str, cell: Cell, *, python: str = sys.executable, timeout: float = 600) -> Any:
    """Run ``action`` on ``cell`` in a fresh interpreter; its JSON result, or a precise error."""
    proc = subprocess.run(
        [python, "-m", "accord.benchmarks.side", action, cell.to_json()],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{action} {cell.label()} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    action, text = argv or sys.argv[1:3]
    if action not in ("run", "build"):
        raise SystemExit(f"usage: python -m accord.benchmarks.side run|build CELL_JSON (not {action!r})")
    cell = Cell.from_json(text)
    if cell.path:
        Path(cell.path).mkdir(parents=True, exist_ok=True)
    result = asyncio.run(build_history(cell) if action == "build" else run_cell(cell))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
