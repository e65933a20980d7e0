# One entry point for people and CI.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test lint typecheck bench clean

install:  ## create .venv and install Basalt with everything the tests need
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@command -v npm >/dev/null || { echo "make install: npm not found; tests/js (the npm client tests) needs Node 20+ and npm" >&2; exit 1; }
	npm ci --prefix tests/js --no-audit --no-fund --loglevel=error

test:  ## lint, type-check, then the whole test suite on SQLite and again on PostgreSQL
	$(BIN)/ruff check basalt tests bench examples
	$(BIN)/mypy
	$(BIN)/lint-imports
	BASALT_TEST_BACKEND=sqlite $(BIN)/pytest -q
	BASALT_TEST_BACKEND=postgres $(BIN)/pytest -q

lint:
	$(BIN)/ruff check basalt tests bench examples

typecheck:
	$(BIN)/mypy

bench:  ## run the benchmarks (prints ratios against baselines measured in the same run)
	$(BIN)/python bench/core_bench.py
	$(BIN)/python bench/sync_bench.py
	$(BIN)/python bench/scheduler_bench.py
	$(BIN)/python bench/files_bench.py
	$(BIN)/python bench/postgres_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
