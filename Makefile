# The two commands a newcomer runs: `make run` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test lint typecheck unit integration bench clean install browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[embedded,test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# Debian's Chromium for the GraphiQL browser test; best effort (the test skips, naming why,
# when it cannot be installed).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
	  echo "chromium not installed: the GraphiQL browser test will be skipped"; }

## make run: install, then start the embedded stack with the example pipeline and demo data
run: install
	$(BIN)/hosepipe up --demo

## make test: install, lint, type-check, run every test (unit + integration on real servers)
test: install browser lint typecheck
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy hosepipe connectors streams sink selector api schemas
	$(BIN)/mypy bench  # apart: a second module named like a package would clash

unit: install
	$(BIN)/python -m pytest -q -m "not integration and not slow" $(PYTEST_ARGS)

integration: install
	$(BIN)/python -m pytest -q -m "integration and not slow" $(PYTEST_ARGS)

## make bench: the benchmarks that print figures (see docs/benchmarks.md); the whole pipeline
## (bench/e2e.py) first, then every per-stage bench. One: make bench BENCH=bench/e2e.py
## BENCH_ARGS="--events 100000"
BENCH ?= bench/e2e.py $(filter-out bench/e2e.py,$(wildcard bench/*.py))
bench: install
	for b in $(BENCH); do echo "== $$b"; $(BIN)/python $$b $(BENCH_ARGS) || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache
