# Set-up on a fresh machine is two commands: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
STATIC := src/gigavision/server/static/index.html
WEB_SOURCES := $(shell find web/src -type f 2>/dev/null) web/index.html web/package.json web/package-lock.json web/vite.config.ts web/tsconfig.json
PORT ?= 8000

.PHONY: install web chromium demo test test-fast lint bench bench-tools clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(STATIC): $(WEB_SOURCES)
	cd web && npm ci --no-audit --no-fund --loglevel=error && npm run build

web: $(STATIC)

# Debian's chromium for the browser tests (never a downloaded browser build).
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

demo: install web
	$(BIN)/gigavision demo demo-workspace --port $(PORT)

test: install web chromium
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -m "not browser and not slow"

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

# Baselines for the benchmarks: the vips CLI, nginx and wrk from Debian.
bench-tools:
	@command -v vips >/dev/null && command -v nginx >/dev/null && command -v wrk >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libvips-tools nginx-light wrk >/dev/null; }

# SAHI 0.12.8 (with opencv-python, matplotlib) is bench_infer.py's baseline: installed here, never in pyproject.
bench: install bench-tools
	$(BIN)/pip install -q 'sahi==0.12.8'
	@for b in benchmarks/bench_*.py; do echo "== $$b" >&2; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) web/node_modules src/gigavision/server/static demo-workspace .bench
