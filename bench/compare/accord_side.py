"""Accord's side of one comparison cell: ``accord_side.py run|build CELL_JSON`` prints a JSON result.

Run by ``run.py`` with Accord's own interpreter, one fresh process per cell; the workloads are in
``src/accord/benchmarks/workloads.py`` (``accord bench`` runs the same ones).
"""

from accord.benchmarks.side import main

if __name__ == "__main__":
    main()
