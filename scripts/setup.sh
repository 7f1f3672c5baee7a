#!/usr/bin/env bash
# Installs and starts what the test suite needs, when missing (run as root on Debian, as CI is):
# redis-server/redis-cli (tests start their own servers on ephemeral ports), python3 + the pinned
# compat venv, PostgreSQL on 127.0.0.1:5432 with trust auth (the Django e2e tests create and drop
# their own databases; the TLS tests run private clusters from its binaries), nginx (the deploy
# guide's test runs its own, in the foreground on an ephemeral port), Debian's chromium +
# node/npm and the browser driver (playwright-core only, it never downloads a browser), and
# cargo-nextest. Idempotent: on a ready machine it only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-venv)
command -v pg_ctlcluster >/dev/null 2>&1 || need_apt+=(postgresql)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "scripts/setup.sh: missing ${need_apt[*]}; install them (apt-get install -y ${need_apt[*]}) or run as root" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest

# The browser tests' driver (playwright-core only; the browser is Debian's chromium above).
[ -d tests/browser/node_modules/playwright-core ] ||
  (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)

# The pinned Python peers (channels, channels_redis, Django, daphne).
tests/compat/setup.sh

# PostgreSQL on 127.0.0.1:5432, trust auth for 127.0.0.1: start the cluster if it is down.
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  version="$(ls /etc/postgresql | sort -V | tail -n1)"
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  if ! grep -qE '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
  pg_isready -h 127.0.0.1 -p 5432
fi
