# careloop — the README's commands. Needs only Python 3.11 (python3.11 or python3 on PATH).
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO_ARGS  ?=
TEST_ARGS  ?=
BENCH_ARGS ?=

.PHONY: demo test bench lint install install-dev clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "careloop needs Python 3.11+ (set PYTHON=/path/to/python3.11)"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## make demo: install, generate the synthetic network, ingest it into careloop.duckdb, serve on :8000
demo: $(VENV)/.installed
	$(BIN)/careloop demo $(DEMO_ARGS)

## make test: install test dependencies and run the whole suite
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(TEST_ARGS)

## make bench: run the benchmarks and update docs/benchmarks.md
bench: $(VENV)/.installed
	$(BIN)/careloop bench $(BENCH_ARGS)

## make lint: ruff and mypy
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) careloop.duckdb careloop.duckdb.wal demo-data .careloop .pytest_cache .mypy_cache .ruff_cache
