#!/usr/bin/env bash
# Installs and starts what the test suite needs, when missing, and says what it will change
# before it changes it. Idempotent: on a ready machine it only checks.
#
#   scripts/setup.sh [-v]        -v (or HERALD_SETUP_VERBOSE=1): show every installer's output;
#                                otherwise it goes to a log file, shown only if a step fails.
#
# What it may do (docs/testing.md lists the same):
# * as root with apt-get: install the missing ones of redis-server, redis-tools, python3 +
#   python3-venv, postgresql, nginx-light (the deploy guide's test runs its own nginx on an ephemeral port),
#   chromium, nodejs, npm (chromium alone pulls in ~125 packages);
# * `cargo install --locked cargo-nextest`;
# * `npm ci` in tests/browser (playwright-core, typescript, a link to the client's package; it
#   never downloads a browser);
# * build the pinned Python venv tests/compat/.venv (pip, from tests/compat/requirements.txt);
# * as root, if PostgreSQL is not answering on 127.0.0.1:5432: add the line
#   `host all all 127.0.0.1/32 trust` at the top of the newest cluster's pg_hba.conf (any local
#   user may then log in to any database without a password) and start that cluster.
#
# Without root (or on macOS) nothing is installed system-wide: it names what is missing and
# carries on if redis-server is there, so the Rust tests that need only Redis run and the
# others print a SKIPPING line. With HERALD_REQUIRE_COMPAT=1 (CI) anything missing fails.
set -euo pipefail
cd "$(dirname "$0")/.."

verbose="${HERALD_SETUP_VERBOSE:-0}"
if [ "${1:-}" = "-v" ]; then verbose=1; fi
require="${HERALD_REQUIRE_COMPAT:-0}"
log="$(mktemp "${TMPDIR:-/tmp}/herald-setup.XXXXXX")"
missing=()

say() { echo "setup: $*"; }

# Runs one step; quiet unless verbose, with its output shown if it fails.
run() {
  if [ "$verbose" = 1 ]; then
    "$@"
  elif ! "$@" >>"$log" 2>&1; then
    echo "setup: failed: $*" >&2
    tail -n 40 "$log" >&2
    echo "setup: full log: $log" >&2
    exit 1
  fi
}

# As `run` for a part only some tests need: a failure marks `what` as missing (fatal only
# under HERALD_REQUIRE_COMPAT=1) and keeps the log.
optional() {
  local what="$1"
  shift
  if [ "$require" = 1 ]; then
    run "$@"
    return
  fi
  if [ "$verbose" = 1 ]; then
    "$@" && return
  else
    "$@" >>"$log" 2>&1 && return
  fi
  say "could not set up $what (log: $log)"
  missing+=("$what")
  keep_log=1
}
keep_log=0

is_root() { [ "$(id -u)" = 0 ]; }

# --- system packages --------------------------------------------------------------------------
need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-venv)
command -v pg_isready >/dev/null 2>&1 || need_apt+=(postgresql)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  if is_root && command -v apt-get >/dev/null 2>&1; then
    say "installing with apt-get: ${need_apt[*]} (and their dependencies)"
    run apt-get update -qq
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else
    say "missing: ${need_apt[*]} (not root or no apt-get: not installing them)"
    missing+=("${need_apt[@]}")
  fi
fi
if ! command -v redis-server >/dev/null 2>&1; then
  echo "setup: redis-server is required by every Redis test; install it (Debian: apt-get install redis-server, macOS: brew install redis)" >&2
  exit 1
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
  say "installing cargo-nextest (cargo install --locked cargo-nextest)"
  run cargo install --locked cargo-nextest
fi

# --- the browser tests' driver ----------------------------------------------------------------
if [ ! -d tests/browser/node_modules/playwright-core ] || [ ! -d tests/browser/node_modules/typescript ] \
  || [ ! -e tests/browser/node_modules/herald-task-notifications ]; then
  if command -v npm >/dev/null 2>&1; then
    say "installing the browser driver into tests/browser/node_modules (npm ci: playwright-core, typescript)"
    optional "browser driver" env PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 \
      sh -c 'cd tests/browser && npm ci --no-audit --no-fund'
  else
    missing+=("browser driver (needs npm)")
  fi
fi

# --- the pinned Python peers (channels, channels_redis, Django, daphne) -----------------------
if ! tests/compat/setup.sh --check; then
  if command -v python3 >/dev/null 2>&1; then
    say "building tests/compat/.venv (pip install -r tests/compat/requirements.txt)"
    optional "compat venv" tests/compat/setup.sh
  else
    missing+=("compat venv (needs python3)")
  fi
fi

# --- PostgreSQL on 127.0.0.1:5432 with trust auth ---------------------------------------------
if ! { command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432; }; then
  if is_root && [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null 2>&1; then
    version="$(ls /etc/postgresql | sort -V | tail -n1)"
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    if ! grep -qE '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
      say "adding 'host all all 127.0.0.1/32 trust' at the top of $hba: any local user may log in to any database without a password"
      sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
    fi
    say "starting PostgreSQL $version (pg_ctlcluster $version main start)"
    run pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
    run pg_isready -h 127.0.0.1 -p 5432
  else
    missing+=("PostgreSQL on 127.0.0.1:5432 with trust auth for user postgres")
  fi
fi

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$require" = 1 ]; then
    echo "setup: HERALD_REQUIRE_COMPAT=1 and these are missing: ${missing[*]}" >&2
    exit 1
  fi
  say "not available here: ${missing[*]}"
  say "the tests that need them print SKIPPING; the Rust tests that need only Redis run"
else
  say "ready: redis-server, PostgreSQL, the compat venv, Chromium + driver, cargo-nextest"
fi
if [ "$keep_log" = 0 ]; then rm -f "$log"; fi
