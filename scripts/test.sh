#!/usr/bin/env bash
# The whole test suite: the README's test command and what CI runs (.ci/run calls this).
# scripts/setup.sh first installs and starts whatever is missing (Redis, Python venv, PostgreSQL,
# Chromium); then every check runs with HERALD_REQUIRE_COMPAT=1, so a test that cannot find
# Python, Redis, PostgreSQL or Chromium fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
export HERALD_COMPAT_PYTHON="${HERALD_COMPAT_PYTHON:-$PWD/tests/compat/.venv/bin/python}"
export HERALD_REQUIRE_COMPAT="${HERALD_REQUIRE_COMPAT:-1}"

cargo fmt --all --check
# --all-targets also type-checks benches/ and examples/ (CI does not run benchmarks).
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo nextest run --workspace --locked --no-fail-fast
cargo test --doc --workspace --locked
RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps --workspace --locked
