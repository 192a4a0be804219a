# pgqrs developer tasks. `make help` lists them.
#
# One release build serves everything: `cargo build/test --release` and the
# Python extension built by maturin use the same profile, the same features
# (pgqrs/full) and the same CARGO_TARGET_DIR (cargo's default, or whatever the
# environment sets), so the core and its dependencies are compiled once.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

VENV ?= .venv
PYTHON ?= python3
CARGO ?= cargo
VENV_BIN := $(CURDIR)/$(VENV)/bin

# Minimum versions of the Python tooling (kept in step with pyproject.toml).
PY_TOOLS := "maturin>=1.9.4,<2" "pytest>=8.0" "pytest-asyncio>=0.24" "hypothesis>=6.100" "ruff>=0.6" "mypy>=1.11" "psycopg[binary]>=3.1"
# The stamp names the tool list, so that adding a tool reinstalls into an existing .venv.
VENV_STAMP := $(VENV)/.pgqrs-tools-$(shell echo '$(PY_TOOLS)' | cksum | cut -d' ' -f1)

# Bad-input property tests (tests/test_bad_input.py, crates/pgqrs/tests/bad_input.rs):
# examples per property in `make test`; `make chaos` runs many more.
PGQRS_BAD_INPUT_EXAMPLES ?= 8
PROPTEST_CASES ?= 16
export PGQRS_BAD_INPUT_EXAMPLES PROPTEST_CASES

# The Python suite reads this DSN for its PostgreSQL cases; override as needed.
PGQRS_TEST_DSN ?= postgresql://postgres@127.0.0.1:5432/test
export PGQRS_TEST_DSN

# --- One release build -----------------------------------------------------
# maturin builds the extension with `cargo rustc --profile release --lib` and
# sets PYO3_PYTHON, PYO3_BUILD_EXTENSION_MODULE=1 and PYO3_ENVIRONMENT_SIGNATURE.
# pyo3's build script reruns (and the pyo3 stack recompiles) whenever one of
# those changes, so every cargo command below sees the same values.
#
# Features are resolved over the whole workspace with pgqrs's default features
# off, exactly as the py-pgqrs crate asks for them. (`cargo test -p pgqrs
# --features full` alone would resolve futures-util/futures-channel with fewer
# features than pyo3-async-runtimes needs and rebuild sqlx and the core a second
# time.) py-pgqrs has no Rust test targets, so `cargo test` runs the core's.
# Dev-dependencies can still split the graph: `make check-one-build` tells.
PYO3_SIGNATURE_PY := import sys, struct; v = sys.version_info; \
	print("%s-%d.%d-%dbit" % (sys.implementation.name, v[0], v[1], struct.calcsize("P") * 8))
export VIRTUAL_ENV := $(CURDIR)/$(VENV)
export PYO3_PYTHON := $(VENV_BIN)/python
CARGO_ENV = PYO3_BUILD_EXTENSION_MODULE=1 \
	PYO3_ENVIRONMENT_SIGNATURE="$$($(VENV_BIN)/python -c '$(PYO3_SIGNATURE_PY)')"
CARGO_FLAGS := --release --workspace --no-default-features --features pgqrs/full

.PHONY: help venv build test test-rust test-python lint check-one-build typecheck fmt demo bench bench-quick chaos chaos-quick clean distclean

help: ## List the targets with a one-line description
	@echo "usage: make <target>   (CARGO_TARGET_DIR and PGQRS_TEST_DSN are honoured)"
	@echo
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

venv: $(VENV_STAMP) ## Create .venv with maturin, pytest, pytest-asyncio, hypothesis, ruff and mypy

$(VENV_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(VENV_BIN)/python -m pip install --quiet --upgrade pip
	$(VENV_BIN)/python -m pip install --quiet $(PY_TOOLS)
	touch $@

build: venv ## Release-build the Rust workspace and install the Python package into .venv
	$(CARGO_ENV) $(CARGO) build $(CARGO_FLAGS)
	$(VENV_BIN)/maturin develop --release

test: build ## Build, then run the Rust and the Python test suites
	$(CARGO_ENV) $(CARGO) test $(CARGO_FLAGS)
	$(VENV_BIN)/pytest tests -q

test-rust: venv ## Run the Rust test suite only (release, all features)
	$(CARGO_ENV) $(CARGO) test $(CARGO_FLAGS)

test-python: venv ## Run the Python test suite only, against the package last built
	$(VENV_BIN)/pytest tests -q

lint: build ## Check formatting, clippy (warnings are errors), ruff, mypy and the native stub
	$(CARGO) fmt --all --check
	$(CARGO_ENV) $(CARGO) clippy $(CARGO_FLAGS) --all-targets -- -D warnings
	$(VENV_BIN)/ruff check .
	$(VENV_BIN)/ruff format --check .
	$(VENV_BIN)/mypy
	$(VENV_BIN)/python -m mypy.stubtest pgqrs._pgqrs

fmt: venv ## Format the Rust and Python sources in place
	$(CARGO) fmt --all
	$(VENV_BIN)/ruff format .
	$(VENV_BIN)/ruff check --fix .

check-one-build: ## List crates the wheel and the tests resolve differently (built twice)
	$(PYTHON) .ci/check-one-build.py

typecheck: build ## mypy (strict) on the package and tests, stubtest on the native stub
	$(VENV_BIN)/mypy
	$(VENV_BIN)/python -m mypy.stubtest pgqrs._pgqrs

demo: build ## Run examples/demo.py against the freshly built package
	$(VENV_BIN)/python examples/demo.py

# --- Benchmarks (benches/; README, "Performance") ------------------------------
# Never part of `make test`. The peers come from PyPI into a venv of their own: the
# published pgqrs 0.15.3 has the same import name (`pgqrs`) as this package.
PEERS_VENV := benches/.venv-peers
PEERS_STAMP := $(PEERS_VENV)/.pgqrs-peers
BENCH_PEERS := "pgqrs==0.15.3" "pgqueuer==1.6.0" "asyncpg==0.32.0"
PGQRS_BENCH_DSN ?= $(PGQRS_TEST_DSN)
BENCH_ARGS ?=

bench: build $(PEERS_STAMP) ## Full benchmark (~25 min): pgqrs vs the SQL ceiling and peers, 3 runs each
	$(VENV_BIN)/python benches/run.py --dsn "$(PGQRS_BENCH_DSN)" $(BENCH_ARGS)

bench-quick: build $(PEERS_STAMP) ## Quick benchmark (a few minutes): small counts, 1 run each
	$(VENV_BIN)/python benches/run.py --quick --dsn "$(PGQRS_BENCH_DSN)" $(BENCH_ARGS)

$(PEERS_STAMP):
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS_VENV)/bin/python -m pip install --quiet $(BENCH_PEERS)
	touch $@

# --- Chaos (tests/chaos/; README, "Reliability") ----------------------------------------------
# Never part of `make test` (tests/test_chaos.py, a short kill storm, is). Scenarios 3-5 run on
# a private PostgreSQL instance the harness starts on a free port; PgBouncer comes from Debian.
CHAOS_ARGS ?=
# Scenario 6's Rust half (proptest) runs first and leaves its case count next to this report;
# run.py's Python half (hypothesis) writes the report itself.
CHAOS_BAD_INPUT_REPORT := $(CURDIR)/tests/chaos/results/bad_input.json

chaos: build chaos-deps ## Chaos harness (~45 min): kill storms, restarts, pinned xmin, hostile neighbours
	$(CARGO_ENV) PROPTEST_CASES=256 PGQRS_BAD_INPUT_REPORT=$(CHAOS_BAD_INPUT_REPORT) \
		$(CARGO) test $(CARGO_FLAGS) --test bad_input
	PGQRS_CHAOS_BAD_INPUT_REPORT=$(CHAOS_BAD_INPUT_REPORT) \
		$(VENV_BIN)/python tests/chaos/run.py $(CHAOS_ARGS)

chaos-quick: build chaos-deps ## Chaos harness, small sizes (a few minutes)
	$(CARGO_ENV) PROPTEST_CASES=32 PGQRS_BAD_INPUT_REPORT=$(CHAOS_BAD_INPUT_REPORT) \
		$(CARGO) test $(CARGO_FLAGS) --test bad_input
	PGQRS_CHAOS_BAD_INPUT_REPORT=$(CHAOS_BAD_INPUT_REPORT) \
		$(VENV_BIN)/python tests/chaos/run.py --quick $(CHAOS_ARGS)

.PHONY: chaos-deps
chaos-deps:
	@command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || { \
		echo "==> installing pgbouncer (Debian package)"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo -n); \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q pgbouncer >/dev/null 2>&1 \
		|| { $$SUDO apt-get update -q >/dev/null \
		     && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q pgbouncer >/dev/null; }; }

clean: ## Remove this workspace's own build outputs and Python caches (keeps dependencies)
	$(CARGO) clean --release -p pgqrs -p py-pgqrs
	$(CARGO) clean -p pgqrs -p py-pgqrs
	rm -rf dist .pytest_cache .mypy_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf
	find py-pgqrs/python -name '*.so' -delete

distclean: clean ## Remove everything: the whole cargo target dir, .venv and the bench venv
	$(CARGO) clean
	rm -rf $(VENV) $(PEERS_VENV) benches/results/.tmp-db benches/results/quick
