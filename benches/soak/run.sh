#!/usr/bin/env bash
# Run with: benches/soak/run.sh [SECONDS]   (default 300; needs redis-server and the compat venv)
#
# The long version of crates/herald-server/tests/hostile_churn.rs, against the real binary:
# starts a private redis-server and `herald serve` (release build) on free loopback ports, runs
# benches/soak/churn.py (8 loops of connect, ping/pong, publish + receive, close) for SECONDS,
# and prints herald's VmRSS every 10 s. At the end it prints the RSS after a 60 s warm-up, the
# peak after it, the last sample and the growth, and exits 1 if the growth exceeds
# SOAK_MAX_GROWTH_KIB (default 8192) or no cycle completed.
#
# Env: HERALD_BIN (default target/release/herald, built if missing), PYTHON (default the compat
# venv), SOAK_CLIENTS (8), SOAK_WARMUP (60), SOAK_MAX_GROWTH_KIB (8192).
set -euo pipefail

DURATION=${1:-300}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERALD_BIN=${HERALD_BIN:-$ROOT/target/release/herald}
PYTHON=${PYTHON:-$ROOT/tests/compat/.venv/bin/python}
CLIENTS=${SOAK_CLIENTS:-8}
WARMUP=${SOAK_WARMUP:-60}
MAX_GROWTH_KIB=${SOAK_MAX_GROWTH_KIB:-8192}
TOKEN=soak-token-$RANDOM$RANDOM

if [[ ! -x $HERALD_BIN ]]; then
  (cd "$ROOT" && cargo build --release -p herald-cli)
fi
command -v redis-server >/dev/null || { echo "redis-server not found (apt-get install -y redis-server)" >&2; exit 1; }
[[ -x $PYTHON ]] || { echo "no python at $PYTHON (run tests/compat/setup.sh)" >&2; exit 1; }

WORK=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_for() { # wait_for SECONDS CMD...: polls CMD every 50 ms until it succeeds
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    (( SECONDS < deadline )) || { echo "timed out waiting for: $*" >&2; return 1; }
    sleep 0.05
  done
}

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$WORK" --logfile "$WORK/redis.log" &
pids+=($!)
wait_for 5 redis-cli -p "$REDIS_PORT" ping

PORT=$(free_port)
RUST_LOG=warn "$HERALD_BIN" serve --bind "127.0.0.1:$PORT" --redis "redis://127.0.0.1:$REDIS_PORT" \
  --trusted-user-header x-remote-user --publish-token "$TOKEN" 2>"$WORK/herald.log" &
HERALD_PID=$!
pids+=($HERALD_PID)
wait_for 10 curl -sf "http://127.0.0.1:$PORT/healthz"

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$HERALD_PID/status"; }
metric() { curl -s "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

echo "herald $("$HERALD_BIN" --version 2>/dev/null || echo '?') pid $HERALD_PID, commit $(git -C "$ROOT" rev-parse --short HEAD), $(nproc) cores"
echo "soak: ${DURATION}s, $CLIENTS churn loops, warm-up ${WARMUP}s; rss before load: $(rss) KiB"
"$PYTHON" "$ROOT/benches/soak/churn.py" --url "ws://127.0.0.1:$PORT/ws/tasks/" --token "$TOKEN" \
  --duration "$DURATION" --clients "$CLIENTS" >"$WORK/churn.out" &
CHURN_PID=$!
pids+=($CHURN_PID)

START=$SECONDS
baseline=""
peak=0
last=0
printf '%8s %10s %12s %10s\n' elapsed rss_kib connections open
while kill -0 "$CHURN_PID" 2>/dev/null; do
  sleep 10
  kill -0 "$HERALD_PID" || { echo "herald died" >&2; cat "$WORK/herald.log" >&2; exit 1; }
  t=$((SECONDS - START))
  last=$(rss)
  printf '%8s %10s %12s %10s\n' "$t" "$last" "$(metric herald_connections_total)" "$(metric herald_connections_current)"
  if (( t >= WARMUP )); then
    [[ -n $baseline ]] || baseline=$last
    (( last > peak )) && peak=$last
  fi
done
wait "$CHURN_PID" || true
result=$(cat "$WORK/churn.out")
echo "churn: $result"
open=$(metric herald_connections_current)
baseline=${baseline:-$last}
(( peak > 0 )) || peak=$last
growth=$((peak - baseline))
echo "rss KiB: after warm-up $baseline, peak after warm-up $peak, last $last, growth $growth; open sockets at end $open"
cycles=$("$PYTHON" -c 'import json,sys; print(json.loads(sys.argv[1])["cycles"])' "$result")
(( cycles > 0 )) || { echo "FAIL: no churn cycle completed" >&2; exit 1; }
(( growth <= MAX_GROWTH_KIB )) || { echo "FAIL: rss grew ${growth} KiB > ${MAX_GROWTH_KIB} KiB" >&2; exit 1; }
echo "ok"
