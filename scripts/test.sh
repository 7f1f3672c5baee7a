#!/usr/bin/env bash
# The whole test suite: the README's test command and what CI runs (.ci/run calls this).
# scripts/setup.sh first installs and starts whatever is missing and it may install (Redis,
# Python venv, PostgreSQL, Chromium; see its header), then every check runs. CI sets
# HERALD_REQUIRE_COMPAT=1, so there a test that cannot find Python, PostgreSQL or Chromium
# fails instead of skipping; locally (e.g. macOS, or no root) such tests print SKIPPING and the
# rest, which need only redis-server, run. `scripts/test.sh -v` shows the installers' output.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh "$@"
venv_python="$PWD/tests/compat/.venv/bin/python"
if [ -z "${HERALD_COMPAT_PYTHON:-}" ] && [ -x "$venv_python" ]; then
  export HERALD_COMPAT_PYTHON="$venv_python"
fi

# The Python package `herald` (python/, the extension is crates/herald-py), built into the
# compat venv with maturin so that crates/herald-py's tests and the CLI's py_* tests import it.
# Under HERALD_REQUIRE_COMPAT=1 (CI) a venv without maturin fails here, with the reason.
venv_maturin="$PWD/tests/compat/.venv/bin/maturin"
if [ -x "$venv_maturin" ]; then
  echo "test: building the herald Python package into tests/compat/.venv (maturin develop)"
  (cd python && VIRTUAL_ENV="$PWD/../tests/compat/.venv" "$venv_maturin" develop --locked -q)
  # The same package as a real wheel (what `pip install ./python` builds, in the dev profile
  # so that it reuses the build above): crates/herald-py's py_wheel test installs it apart
  # from the editable one and runs the package's tests against it.
  rm -rf target/herald-wheel
  (cd python && "$venv_maturin" build --locked -q --interpreter "$venv_python" --out ../target/herald-wheel)
elif [ "${HERALD_REQUIRE_COMPAT:-0}" = 1 ]; then
  echo "test: cannot build the herald Python package: $venv_maturin is missing (tests/compat/setup.sh installs it)" >&2
  exit 1
else
  echo "test: not building the herald Python package (no compat venv); its tests print SKIPPING"
fi

# A merge leftover in any tracked file (docs included) fails the run.
if git grep -nE '^(<<<<<<< |>>>>>>> )' -- . ':!*.lock' 2>/dev/null; then
  echo "test: unresolved merge conflict markers (above)" >&2
  exit 1
fi
cargo fmt --all --check
# --all-targets also type-checks benches/ and examples/ (CI does not run benchmarks).
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo nextest run --workspace --locked --no-fail-fast
cargo test --doc --workspace --locked
RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps --workspace --locked
