"""How good is the windowed estimate? AG2's W1 run in full and on windows, side by side.

    .venv/bin/python bench/compare/check_windows.py            # ~3 minutes

For AG2's memory and disk stores the full 20,000 sends are affordable once; for its SQLite store
the check runs at 3,000 sends (20,000 take about 20 minutes), with windows spread the same way.
The table in docs/PERFORMANCE.md ("How AG2's long runs are measured") comes from this script.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table
from run import _WIDTH, ag2_python, run_side

from accord.benchmarks.cells import cell

CHECKS = (("memory", 20_000), ("disk", 20_000), ("sqlite", 3_000))


def spread(n: int, width: int) -> tuple[tuple[int, int], ...]:
    return tuple((min(n - width, n * i // 4), width) for i in range(5))


def main() -> int:
    console = Console(width=None if sys.stdout.isatty() else 120)
    python = ag2_python(console)
    table = Table(title="AG2 W1: full run against the windowed estimate")
    for name in ("store", "sends", "full run", "estimate", "estimate / full"):
        table.add_column(name, justify="left" if name == "store" else "right")
    work = Path(tempfile.mkdtemp(prefix="accord-windows-"))
    try:
        for store, n in CHECKS:
            width = _WIDTH[("w1", store)]
            full = run_side(python, "ag2_side.py", "run", cell("w1", store, n=n, path=str(work / "f")), 3600)
            est = run_side(
                python,
                "ag2_side.py",
                "run",
                cell("w1", store, n=n, windows=spread(n, width), path=str(work / "e")),
                3600,
            )
            shutil.rmtree(work / "f", ignore_errors=True)
            shutil.rmtree(work / "e", ignore_errors=True)
            ratio = est["seconds"] / full["seconds"]
            table.add_row(
                store, f"{n:,}", f"{full['seconds']:.1f} s", f"{est['seconds']:.1f} s", f"{ratio:.2f}"
            )
            console.print(
                f"{store}: full {full['seconds']:.1f} s, estimate {est['seconds']:.1f} s ({ratio:.2f})"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
