#!/usr/bin/env bash
# Run with: benches/revalidation/run.sh [SESSIONS]   (default 10000; needs redis-server, the
# compat venv, and PostgreSQL on 127.0.0.1:5432 with user postgres and trust auth, as the tests)
#
# What one session re-validation round costs: creates a PostgreSQL database for the Django test
# project with SESSIONS users each logged in once, starts a private redis-server and `herald
# serve --session-revalidation INTERVAL` (release build) on free loopback ports, opens one
# WebSocket per session (benches/revalidation/hold.py), and then measures ROUNDS rounds:
# * the round's duration, as herald reports it (herald_session_revalidation_last_round_seconds);
# * the queries per round: PostgreSQL's transaction count for the database (every query herald
#   runs is one autocommit transaction; nothing else uses the database meanwhile, and the
#   readiness check is slowed to once an hour), sampled 12 s after a round so that the server has
#   flushed its statistics;
# * herald's CPU time per round (utime + stime from /proc).
# Finally it logs 1 % of the users out (deletes their session rows) and reports how many sockets
# the next round closed, and with which code.
#
# Env: HERALD_BIN (default target/release/herald, built if missing), PYTHON (default the compat
# venv), INTERVAL (15 s), ROUNDS (4).
set -euo pipefail

SESSIONS=${1:-10000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERALD_BIN=${HERALD_BIN:-$ROOT/target/release/herald}
PYTHON=${PYTHON:-$ROOT/tests/compat/.venv/bin/python}
INTERVAL=${INTERVAL:-15}
ROUNDS=${ROUNDS:-4}
SECRET=bench-secret-$RANDOM$RANDOM
DB=herald_bench_reval_$$
PSQL=(psql -h 127.0.0.1 -U postgres -X -q -tA)

if [[ ! -x $HERALD_BIN ]]; then
  (cd "$ROOT" && cargo build --release -p herald-cli)
fi
command -v redis-server >/dev/null || { echo "redis-server not found" >&2; exit 1; }

WORK=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # wait_for SECONDS CMD...: polls CMD every 100 ms until it succeeds
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    (( SECONDS < deadline )) || { echo "timed out waiting for: $*" >&2; return 1; }
    sleep 0.1
  done
}

"${PSQL[@]}" -d postgres -c "CREATE DATABASE $DB"
DB_URL="postgres://postgres@127.0.0.1:5432/$DB"
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$WORK" --logfile "$WORK/redis.log" &
pids+=($!)
wait_for 5 redis-cli -p "$REDIS_PORT" ping

django() {
  (cd "$ROOT/tests/compat/django_project" && env DJANGO_SETTINGS_MODULE=herald_site.settings \
    DATABASE_URL="$DB_URL" SECRET_KEY="$SECRET" REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
    PYTHONDONTWRITEBYTECODE=1 "$PYTHON" manage.py "$@")
}
django migrate --verbosity 0
BENCH_SESSIONS=$SESSIONS BENCH_KEYS=$WORK/keys django shell -c "$(cat "$ROOT/benches/revalidation/make_sessions.py")"

PORT=$(free_port)
RUST_LOG=info "$HERALD_BIN" serve --bind "127.0.0.1:$PORT" --redis "redis://127.0.0.1:$REDIS_PORT" \
  --secret-key "$SECRET" --django-db "$DB_URL" --session-revalidation "$INTERVAL" \
  --health-interval 3600 2>"$WORK/herald.log" &
HERALD_PID=$!
pids+=($HERALD_PID)
wait_for 10 curl -sf "http://127.0.0.1:$PORT/healthz"

metric() { curl -s "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
xacts() { "${PSQL[@]}" -d postgres -c "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '$DB'"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$HERALD_PID/stat"; }
next_round() { # waits until the rounds counter passes $1; prints the new count
  local r
  while r=$(metric herald_session_revalidation_rounds_total); (( r <= $1 )); do sleep 0.2; done
  echo "$r"
}

mkfifo "$WORK/hold.out"
"$PYTHON" "$ROOT/benches/revalidation/hold.py" --url "ws://127.0.0.1:$PORT/ws/tasks/" \
  --keys "$WORK/keys" >"$WORK/hold.out" &
pids+=($!)
exec 3<"$WORK/hold.out"
read -r -t 600 opened <&3
echo "herald pid $HERALD_PID, commit $(git -C "$ROOT" rev-parse --short HEAD), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "sockets: $opened ($(metric herald_connections_current) on herald), sessions: $SESSIONS, interval ${INTERVAL}s," \
  "herald rss $(awk '/^VmRSS:/ {print $2}' "/proc/$HERALD_PID/status") KiB"

next_round "$(metric herald_session_revalidation_rounds_total)" >/dev/null
sleep 12
r0=$(metric herald_session_revalidation_rounds_total); x0=$(xacts); c0=$(cpu_ticks); t0=$(date +%s.%N); r=$r0
printf '%6s %10s %9s\n' round seconds checked
for _ in $(seq "$ROUNDS"); do
  r=$(next_round "$r")
  printf '%6s %10s %9s\n' "$r" "$(metric herald_session_revalidation_last_round_seconds)" \
    "$(metric herald_session_revalidation_checked_total)"
done
sleep 12
r1=$(metric herald_session_revalidation_rounds_total); x1=$(xacts); c1=$(cpu_ticks); t1=$(date +%s.%N)
rounds=$((r1 - r0))
hz=$(getconf CLK_TCK)
# herald's CPU between rounds (pings and pongs of the idle sockets), to subtract.
next_round "$r1" >/dev/null
sleep 1; ci0=$(cpu_ticks); ti0=$(date +%s.%N)
sleep 10; ci1=$(cpu_ticks); ti1=$(date +%s.%N)
per_round=$(awk -v c="$((c1 - c0))" -v t="$t1" -v t0="$t0" -v ic="$((ci1 - ci0))" -v it1="$ti1" \
  -v it0="$ti0" -v hz="$hz" -v n="$rounds" \
  'BEGIN { idle = ic / (it1 - it0); printf "%d", (c - idle * (t - t0)) * 1000 / hz / n }')
echo "over $rounds rounds: $(( (x1 - x0) / rounds )) queries per round ($((x1 - x0)) transactions)," \
  "herald cpu $(( (c1 - c0) * 1000 / hz / rounds )) ms per round of which $per_round ms above idle," \
  "failed rounds $(metric herald_session_revalidation_failed_rounds_total)"

LOGOUT=$((SESSIONS / 100))
"${PSQL[@]}" -d "$DB" -c "DELETE FROM django_session WHERE session_key IN (SELECT session_key FROM django_session ORDER BY session_key LIMIT $LOGOUT)"
closed=""
deadline=$((SECONDS + 2 * INTERVAL + 30))
while (( SECONDS < deadline )); do
  read -r -t 5 line <&3 || continue
  closed=$line
  [[ $line == *"\"closed\": $LOGOUT,"* ]] && break
done
echo "logged $LOGOUT users out: $closed; herald closed $(metric herald_session_revalidation_closed_total)"
