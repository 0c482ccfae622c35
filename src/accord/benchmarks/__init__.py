"""Accord's side of the performance comparison (issue 6), and ``accord bench``.

The workloads are defined once, as :class:`~accord.benchmarks.cells.Cell` records, so the comparison
harness in ``bench/compare/`` can hand the very same cell to Accord and to AG2's network hub (which
runs in its own virtual environment and loads :mod:`cells` and :mod:`measure` by file path — both
are stdlib-only for that reason).
"""
