# Two entry points for a fresh machine: `make demo` and `make test` (each sets up .venv first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
# The CPU wheel on this kind of machine; on a GPU machine use e.g. `make setup TORCH=torch`.
TORCH ?= torch==2.13.0
# The viewer's browser test drives Debian's chromium through Playwright (no browser download).
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo test test-fast lint bench chromium

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

chromium:
	@[ -x $(CHROMIUM) ] || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

demo: setup
	$(BIN)/hypermosaic build examples/demo.toml --out out/demo

# Everything: every test (the browser test included), then the linters.
test: setup chromium
	$(BIN)/python -m pytest -q -n 2
	$(MAKE) --no-print-directory lint

# The inner loop: every package, the slow end-to-end tests left out (under 90 s on 2 cores).
test-fast: setup
	$(BIN)/python -m pytest -q -n 2 -m "not slow"

# Style, types, and the import contracts of pyproject.toml. import-linter reads the package
# from the file system, so it runs on a copy laid out as installed (cli/ and pipelines/ inside).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	rm -rf .lint-tree && mkdir .lint-tree && cp -r hypermosaic .lint-tree/ \
		&& cp -r cli .lint-tree/hypermosaic/cli && cp -r pipelines .lint-tree/hypermosaic/pipelines
	cd .lint-tree && $(BIN)/lint-imports $(CURDIR)/pyproject.toml

bench: setup
	for script in benchmarks/bench_*.py; do \
		$(BIN)/python -m benchmarks.$$(basename $$script .py) || exit 1; done
