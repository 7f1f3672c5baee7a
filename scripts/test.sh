#!/usr/bin/env bash
# The whole test suite, as the README's quick start runs it. Builds the Python compat venv when it
# is missing (tests/compat/setup.sh), then runs every check CI runs. Needs redis-server on PATH
# (tests start their own servers on ephemeral ports) — .ci/run installs it on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -x tests/compat/setup.sh ]; then
  tests/compat/setup.sh
  export HERALD_COMPAT_PYTHON="${HERALD_COMPAT_PYTHON:-$PWD/tests/compat/.venv/bin/python}"
fi
export HERALD_REQUIRE_COMPAT="${HERALD_REQUIRE_COMPAT:-1}"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo nextest run --workspace --locked --no-fail-fast
cargo test --doc --workspace --locked
RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps --workspace --locked
