# Two commands do all the set-up: `make demo` and `make test`. Each creates .venv and installs what is
# missing (the stamp file is rebuilt only when pyproject.toml changes), then runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench bench-ws bench-slow-reader bench-routines bench-compare clean

$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) (once; later runs reuse it)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "==> upgrading pip"
	$(BIN)/python -m pip install -q --upgrade pip
	@echo "==> installing Accord and its test tools into $(VENV) (a minute or two the first time)"
	$(BIN)/python -m pip install --progress-bar off -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/accord demo

test: $(STAMP) lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/hub_throughput.py

bench-ws: $(STAMP)
	$(BIN)/python bench/ws_fanout.py

# 4 sockets that never read + 1 reader, 3,000 × 50 KB posted: the server's RSS growth (docs/server.md)
bench-slow-reader: $(STAMP)
	$(BIN)/python bench/slow_reader.py

bench-routines: $(STAMP)
	$(BIN)/python bench/routine_dispatch.py

# Accord vs AG2 (ag2==1.2.1 in bench/compare/.venv-ag2), 5 rounds A B A B: table and plots in
# bench/results/compare/ (docs/PERFORMANCE.md)
bench-compare: $(STAMP)
	$(BIN)/python bench/compare/run.py

clean:
	rm -rf $(VENV) bench/compare/.venv-ag2 accord-data .pytest_cache .mypy_cache .ruff_cache
