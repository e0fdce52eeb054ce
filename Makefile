# Set-up on a fresh machine is two commands: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
STATIC := src/gigavision/server/static/index.html
# The build type-checks web/tests too (tsconfig.json), so they count as sources.
WEB_SOURCES := $(shell find web/src web/tests -type f 2>/dev/null) web/index.html web/vite.config.ts web/vitest.config.ts \
  web/tsconfig.json
# npm writes this hidden lockfile on every install: web/node_modules is current while it is newer than the lock.
WEB_DEPS := web/node_modules/.package-lock.json
PORT ?= 8000

.PHONY: install lock web chromium demo test test-fast lint bench bench-tools fuzz dist clean

# Everything comes from the hash-pinned lock (every package, transitive ones and the build backend
# included); the project itself is then installed editable without dependencies or build isolation, so
# nothing unpinned is ever fetched. A lock that misses a dependency makes pip refuse (--require-hashes).
$(STAMP): requirements.lock requirements-nodeps.txt pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes -r requirements.lock
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements-nodeps.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# Regenerate requirements.lock from pyproject.toml: [all,dev] with hashes, plus setuptools/wheel for the
# editable build, by pip-tools in a throwaway venv. Pins that still fit are kept; LOCK_FLAGS=--upgrade (or
# --upgrade-package NAME) moves them. tests/test_lock.py fails while pyproject.toml and the lock disagree.
# The self-reference in the `all` extra makes pip-compile emit an unhashable `gigavision @ file://…` entry,
# which is removed.
PIP_TOOLS := pip-tools==7.7.0
LOCK_FLAGS ?=
lock:
	python3 -m venv .venv-lock
	.venv-lock/bin/pip install -q '$(PIP_TOOLS)'
	.venv-lock/bin/pip-compile --quiet --extra all --extra dev --all-build-deps --allow-unsafe --generate-hashes \
	  --strip-extras --no-emit-index-url --no-emit-find-links $(LOCK_FLAGS) -o requirements.lock pyproject.toml
	sed -i '/^# WARNING: pip install will require/,/^    # via file:/d' requirements.lock
	rm -rf .venv-lock

$(WEB_DEPS): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error

$(STATIC): $(WEB_SOURCES) $(WEB_DEPS)
	cd web && npm run build

web: $(STATIC)

# Debian's chromium for the browser tests (never a downloaded browser build).
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# An sdist and a wheel in dist/, with the built viewer (server/static) and the Alembic migrations inside
# (checked below); the wheel is built from the sdist, so both hold them. --no-isolation: setuptools and
# wheel come from the locked venv, not from a download.
dist: install web
	rm -rf dist build src/gigavision.egg-info
	$(PY) -m build --no-isolation --outdir dist .
	$(PY) -c "import glob, zipfile; names = zipfile.ZipFile(glob.glob('dist/gigavision-*.whl')[0]).namelist(); \
	  need = ['gigavision/server/static/index.html', 'gigavision/store/migrations/env.py']; \
	  miss = [n for n in need if n not in names]; assert not miss, f'not in the wheel: {miss}'"

demo: install web
	$(BIN)/gigavision demo demo-workspace --port $(PORT)

# Two xdist workers (one intra-op torch thread each, tests/conftest.py); the tests that use the trained scene
# models share one worker, so each model is trained once. The 25 slowest tests are listed at the end.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup --durations=25

# The viewer's unit tests (Vitest, a few seconds) first, then the Python suite with the browser tests.
test: install web chromium
	cd web && npm test
	$(PYTEST)

test-fast: install
	$(PYTEST) -m "not browser and not slow"

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo

# Baselines for the benchmarks, from Debian: the vips CLI, nginx, wrk and IIPImage (bench_tiles' tile server).
IIPSRV = /usr/lib/iipimage-server/iipsrv.fcgi
bench-tools:
	@command -v vips >/dev/null && command -v nginx >/dev/null && command -v wrk >/dev/null && test -x $(IIPSRV) || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libvips-tools nginx-light wrk \
	  iipimage-server >/dev/null; }

# SAHI 0.12.8 is bench_infer.py's baseline: installed here, never in pyproject. Without its opencv-python
# requirement: the locked opencv-python-headless provides the same cv2, and the two wheels overwrite each other.
bench: install bench-tools
	$(BIN)/pip install -q --no-deps 'sahi==0.12.8'
	$(BIN)/pip install -q click fire matplotlib requests tqdm
	@for b in benchmarks/bench_*.py; do echo "== $$b" >&2; $(PY) $$b || exit 1; done

# The fuzz harnesses' long runs (issue 13), each one JSON line, full reports in .bench/: generated requests on
# every route from the OpenAPI schema, then malformed files uploaded and imported to a running server. Either
# exits 1 on a 5xx or a missed target. Acceptance size (~10 min each on 2 cores):
# make fuzz FUZZ_EXAMPLES=300 FUZZ_FILES=10000
FUZZ_EXAMPLES ?= 50
FUZZ_FILES ?= 1000
fuzz: install
	$(PY) benchmarks/fuzz_api.py --examples $(FUZZ_EXAMPLES)
	$(PY) benchmarks/fuzz_files.py --files $(FUZZ_FILES)

clean:
	rm -rf $(VENV) web/node_modules src/gigavision/server/static demo-workspace .bench dist build
