# One entry point for newcomers and CI. `make serve` builds and serves the example app;
# `make test` runs every test. Both create their own virtualenv in .venv.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# `release` (LTO) is what ships and what CI tests; `make PROFILE=fast ...` builds quicker.
PROFILE ?= release

.PHONY: venv build serve test test-rust test-python smoke autobahn lint fmt bench bench-quick bench-memory fuzz-smoke clean

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

# RSS growth of a worker across a million keep-alive requests (target < 5%).
bench-memory: build
	$(BIN)/python bench/memory.py

# Fuzz the request-head parser, the chunked decoder and WebSocket frames (cargo install cargo-fuzz).
# Stable Rust works without a sanitizer; FUZZ_SECONDS sets the time per target.
FUZZ_SECONDS ?= 15
fuzz-smoke:
	cd fuzz && cargo fuzz run request_head --sanitizer none -- -max_total_time=$(FUZZ_SECONDS)
	cd fuzz && cargo fuzz run chunked_body --sanitizer none -- -max_total_time=$(FUZZ_SECONDS)
	cd fuzz && cargo fuzz run ws_frames --sanitizer none -- -max_total_time=$(FUZZ_SECONDS)

clean:
	rm -rf $(VENV) .venv-smoke-* target
