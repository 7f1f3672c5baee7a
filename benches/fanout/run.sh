#!/usr/bin/env bash
# Fan-out benchmark: herald vs Daphne 4.2 + Channels + channels_redis 4.3, measured
# in the same run, against the same redis-server, with the same Python senders and the same
# client (herald-load). Everything is set up from scratch in a temporary directory, and the
# "Fan-out: herald vs Daphne" section of docs/benchmarks.md is rewritten at the end (the rest
# of that file is left alone). Loopback only; every step is bounded in time.
#
# Run with:
#   benches/fanout/run.sh                      # both servers, full sizes (~20 min on 2 CPUs)
#   BENCH_QUICK=1 benches/fanout/run.sh        # small sizes, a smoke run (~2-3 min)
#   BENCH_SERVERS=daphne benches/fanout/run.sh # one server only
#   BENCH_SCENARIOS="flaky deploy" benches/fanout/run.sh  # the reconnect scenarios (~8 min)
#   BENCH_SCENARIOS=deflate benches/fanout/run.sh  # permessage-deflate off/on per message shape
#
# Environment:
#   BENCH_SERVERS     servers to measure, in order (default "daphne herald"; herald is skipped
#                     with a note until `herald serve` exists)
#   BENCH_SCENARIOS   subset of: broadcast_py broadcast_rust bcast_paced_py bcast_paced_rust
#                     peruser_py peruser_rust peruser_batch paced paced_rust burst_1m burst_1m_py
#                     steady_10k idle_10k idle_max idle_50k burst_10k (default: all of these), and the reconnect scenarios, run
#                     only when named: flaky (random cuts) and deploy (two servers, each
#                     stopped and restarted); their lines go to results/reconnect-*.jsonl;
#                     deflate (the broadcast per guide message shape, compression off
#                     and on; BENCH_DEFLATE_SHAPES picks shapes), to results/deflate-*.jsonl;
#                     and scale_50k (50,000 subscribed sockets over several herald processes on
#                     3 Redis shards, with per-user and broadcast traffic; BENCH_SCALE_SECS),
#                     to results/scale-*.jsonl
#   BENCH_RECONNECT_CLIENTS / BENCH_RECONNECT_SECS  reconnect sizes (default 2000 clients, 60 s)
#   BENCH_DB          sqlite (default) or postgres (a fresh database on 127.0.0.1:5432, dropped
#                     at the end; user from BENCH_PG_USER, default postgres)
#   BENCH_PYTHON      Python with tests/compat/requirements.txt (default: tests/compat/.venv)
#   BENCH_LAYER_BACKEND  the Python senders' CHANNEL_LAYERS backend (default
#                     channels_redis.core.RedisChannelLayer; herald.layers.RedisChannelLayer for
#                     the package in python/, built into the venv with `maturin develop --release`)
#   BENCH_TIME_LIMIT  seconds; scenarios that would start after this are skipped (default 2400:
#                     a full run, Daphne's big broadcasts to their deadlines included, starts its
#                     last scenario at ~1,220 s here)
#   BENCH_NO_DOC=1    do not touch docs/benchmarks.md (results stay in the work directory)
#   BENCH_KEEP=1      keep the work directory (logs, databases)
#   HERALD_EXTRA_ARGS extra `herald serve` arguments, split on spaces (e.g. "--history none")
#   BENCH_LOAD_EXTRA_ARGS extra herald-load arguments for every scenario (e.g. "--deflate", to
#                     measure idle sockets that negotiated compression)
#   BENCH_CLIENT_PATH the path herald-load opens in the single-server scenarios (default
#                     /ws/tasks/; with BENCH_LOAD_EXTRA_ARGS=--sse, /sse/tasks/ for event streams)
#   BENCH_PER_USER    messages per user in peruser_py/peruser_rust (default 10: 10,000 frames,
#                     ~0.1-0.3 s; 100 gives a window long enough that the connects do not count)
#   BENCH_PERUSER_SEND_ARGS  extra `herald-load send per-user` arguments for peruser_rust and
#                     peruser_batch, split on spaces: "--batch 50" (peruser_batch's pipeline
#                     size instead of 200), "--capacity 1000" (peruser_rust's channels_redis
#                     capacity)
#   BENCH_BATCH_PER_USER / BENCH_BATCH_CAPACITY  peruser_batch's messages per user (default 100)
#                     and the sender's channels_redis capacity (default 1000)
#   HERALD_LOAD_BIN / HERALD_BIN  prebuilt binaries instead of `cargo build --profile profiling`
#                     (the release build with debug info kept, so `perf record -p PID` on the
#                     running server resolves symbols; same code as the stripped release)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/benches/fanout
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SITE=$HERE/site
PY=${BENCH_PYTHON:-$ROOT/tests/compat/.venv/bin/python}
DAPHNE_BIN=$(dirname "$PY")/daphne
SERVERS=${BENCH_SERVERS:-daphne herald}
SCENARIOS=${BENCH_SCENARIOS:-broadcast_py broadcast_rust bcast_paced_py bcast_paced_rust peruser_py peruser_rust peruser_batch paced paced_rust burst_1m burst_1m_py steady_10k idle_10k idle_max idle_50k burst_10k}
TIME_LIMIT=${BENCH_TIME_LIMIT:-2400}
QUICK=${BENCH_QUICK:-0}
read -r -a HERALD_EXTRA <<<"${HERALD_EXTRA_ARGS:-}"
read -r -a LOAD_EXTRA <<<"${BENCH_LOAD_EXTRA_ARGS:-}"
CLIENT_PATH=${BENCH_CLIENT_PATH:-/ws/tasks/}
read -r -a PERUSER_SEND_EXTRA <<<"${BENCH_PERUSER_SEND_ARGS:-}"
WORK=$(mktemp -d /tmp/herald-fanout.XXXXXX)
RESULTS=$WORK/results.jsonl
NOTES=$WORK/notes.txt
START=$SECONDS
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
: >"$RESULTS"
: >"$NOTES"

log() { printf '[fanout %4ds] %s\n' "$((SECONDS - START))" "$*" >&2; }
note() { log "note: $*"; printf '%s\n' "$*" >>"$NOTES"; }
die() { log "error: $*"; exit 1; }

# --- sizes (the issue's numbers; BENCH_QUICK shrinks them for a smoke run) --------------------
SOCKETS=1000          # broadcast sockets, per-user users, paced users
BCAST_SENDS=100       # group_sends in the broadcast scenario
# The paced broadcast: group_sends to the 1,000-socket group at a steady rate, so that herald
# delivers the issue's 300k frames/s and p99 is measured *at that load* (the 100-send burst
# above offers all 100k frames at once, far above it).
BCAST_RATE=300        # group_sends/s in the paced broadcast (x 1,000 sockets = 300k frames/s)
BCAST_PACED_SECS=3
PER_USER=${BENCH_PER_USER:-10}  # messages per user in the per-user scenarios
# peruser_batch: 100 per user (100,000 frames, long enough that the handshakes weigh little),
# with 1,000 of channels_redis capacity for the sender (see the scenario).
BATCH_PER_USER=${BENCH_BATCH_PER_USER:-100}
BATCH_CAPACITY=${BENCH_BATCH_CAPACITY:-1000}
PACED_RATE=1000       # msgs/s in the paced scenario
PACED_SECS=10
IDLE_SMALL=10000
# idle_10k holds its sockets this long (three of herald's and Daphne's default 20 s pings),
# for the server CPU an idle socket costs per second; the other idle scenarios measure memory.
IDLE_HOLD_SECS=60
IDLE_WANTED=50000
BURST=10000
# The big broadcasts: one group of BIG_SOCKETS sockets. burst_1m offers BIG_BURST_SENDS
# group_sends within one second (1,000,000 deliveries at 10,000 sockets, the AnyCable/uWS
# benchmark manifest's burst); steady_10k sends one every 500 ms for BIG_STEADY_SECS.
BIG_SOCKETS=10000
BIG_BURST_SENDS=100
BIG_STEADY_SECS=60
# Handshakes in flight for every scenario except the burst. Daphne's channels_redis pool has
# 100 connections and fails (HTTP 500, "Too many connections") beyond that: 32 keeps the
# throughput scenarios about fan-out, not about that failure, which the burst scenario shows.
CONNECT_CONCURRENCY=32
# herald-load's worker threads. One thread was itself a queue at 300k frames/s: the paced
# broadcast's p99 was ~32 ms with one and ~17 ms with two (same herald binary, three
# alternating runs each), and the 100-send burst did not get slower.
CLIENT_THREADS=2
# The reconnect scenarios (flaky, deploy): one client per user; each user gets 1 message/s in
# its user group and the broadcast group (task_bcast, which every client subscribes to) 2/s,
# for RECONNECT_SECS, from the Rust sender's mixed plan. flaky cuts every client's connection
# every ~15 s (uniform 7.5-22.5 s) for ~2 s (1-3 s); deploy stops and restarts each of two
# servers in turn. herald records both groups with the rule below, and its clients resume.
RECONNECT_CLIENTS=${BENCH_RECONNECT_CLIENTS:-2000}
RECONNECT_SECS=${BENCH_RECONNECT_SECS:-60}
RECONNECT_HISTORY='user_*=100/300,task_bcast=100/300'
# The reliability docs' advice for recorded groups under load: the history keys' capacity
# (channels_redis's 100 per key) must absorb what is sent while capture is slow.
RECONNECT_SENDER_CAPACITY='herald.history.*=2000'
if [[ $QUICK == 1 ]]; then
  RECONNECT_CLIENTS=${BENCH_RECONNECT_CLIENTS:-200} RECONNECT_SECS=${BENCH_RECONNECT_SECS:-20}
  BATCH_PER_USER=${BENCH_BATCH_PER_USER:-10}
  SOCKETS=200 BCAST_SENDS=20 BCAST_RATE=100 BCAST_PACED_SECS=1 PER_USER=5 PACED_RATE=200 PACED_SECS=3 IDLE_SMALL=1000
  IDLE_HOLD_SECS=10
  IDLE_WANTED=2000 BURST=1000 BIG_SOCKETS=1000 BIG_BURST_SENDS=20 BIG_STEADY_SECS=5
fi

# One process can hold at most RLIMIT_NOFILE sockets. Raise the soft limit to the hard one; the
# hard limit can only go up with CAP_SYS_RESOURCE, which containers often lack.
ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
IDLE_MAX=$IDLE_WANTED
# idle_50k: when one process cannot hold IDLE_WANTED sockets, the same total over as many
# server processes (and herald-load processes) as the limit needs, all on the one Redis.
IDLE_PROCS=1
if ((IDLE_MAX > NOFILE - 1000)); then
  IDLE_MAX=$((NOFILE - 1000))
  IDLE_PROCS=$(((IDLE_WANTED + IDLE_MAX - 1) / IDLE_MAX))
  note "idle_max: RLIMIT_NOFILE hard limit is $NOFILE here (no CAP_SYS_RESOURCE), so one server process cannot hold $IDLE_WANTED sockets; measured $IDLE_MAX instead, and idle_50k spreads $IDLE_WANTED over $IDLE_PROCS server processes."
fi

# --- cleanup ------------------------------------------------------------------------------------
SERVER_PID=""
MULTI_PIDS=()
REDIS_PID=""
PG_DB=""
cleanup() {
  local rc=$?
  [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  for pid in "${MULTI_PIDS[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  [[ -n $REDIS_PID ]] && kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null
  if [[ -n $PG_DB ]]; then
    psql -h 127.0.0.1 -U "${BENCH_PG_USER:-postgres}" -d postgres -qc "DROP DATABASE IF EXISTS $PG_DB" >/dev/null 2>&1 || true
  fi
  if [[ ${BENCH_KEEP:-0} == 1 || $rc != 0 ]]; then
    log "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Polls until something accepts TCP connections on 127.0.0.1:$1, at most $2 seconds.
wait_port() {
  local port=$1 deadline=$((SECONDS + $2))
  while ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    ((SECONDS < deadline)) || return 1
    kill -0 "$SERVER_PID" 2>/dev/null || return 1
    sleep 0.1
  done
}

# --- tools --------------------------------------------------------------------------------------
[[ -x $PY ]] || die "no Python at $PY: run tests/compat/setup.sh or set BENCH_PYTHON"
command -v redis-server >/dev/null || die "redis-server not found (apt-get install -y redis-server)"
if [[ -z ${HERALD_LOAD_BIN:-} ]]; then
  log "building herald-load (profiling = release + debug info)"
  (cd "$ROOT" && cargo build --profile profiling -q -p herald-load) || die "cannot build herald-load"
  HERALD_LOAD_BIN=$TARGET/profiling/herald-load
fi
# herald: `herald serve` from crates/herald-cli. Without it, herald rows are skipped with a
# note and the script measures Daphne alone.
if [[ -z ${HERALD_BIN:-} && " $SERVERS " == *" herald "* ]]; then
  log "building herald (profiling = release + debug info)"
  if [[ -d $ROOT/crates/herald-cli ]] && (cd "$ROOT" && cargo build --profile profiling -q -p herald-cli); then
    HERALD_BIN=$TARGET/profiling/herald
  fi
fi
# Private copies, so a rebuild in the shared target directory cannot swap a binary mid-run.
mkdir -p "$WORK/bin"
cp "$HERALD_LOAD_BIN" "$WORK/bin/herald-load" && HERALD_LOAD_BIN=$WORK/bin/herald-load
if [[ -n ${HERALD_BIN:-} ]]; then cp "$HERALD_BIN" "$WORK/bin/herald" && HERALD_BIN=$WORK/bin/herald; fi
# The Rust sender: `herald-load send` (uses herald-redis), if this build has it.
RUST_SENDER=0
if "$HERALD_LOAD_BIN" send --help >/dev/null 2>&1; then RUST_SENDER=1; fi

# --- Redis and the Django database ----------------------------------------------------------
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$WORK" --logfile "$WORK/redis.log" &
REDIS_PID=$!
deadline=$((SECONDS + 10))
until redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; do
  ((SECONDS < deadline)) || die "redis-server did not answer PING: $(tail -5 "$WORK/redis.log")"
  sleep 0.05
done
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT
export SECRET_KEY="herald-fanout-bench-$(date +%s)-$RANDOM"
export SESSION_ENGINE=db
export PYTHONPATH=$SITE
export DJANGO_SETTINGS_MODULE=benchsite.settings
if [[ ${BENCH_DB:-sqlite} == postgres ]]; then
  PG_DB=herald_fanout_$$_$RANDOM
  psql -h 127.0.0.1 -U "${BENCH_PG_USER:-postgres}" -d postgres -qc "CREATE DATABASE $PG_DB" >/dev/null
  export DATABASE_URL=postgres://${BENCH_PG_USER:-postgres}@127.0.0.1:5432/$PG_DB
else
  export DATABASE_URL=sqlite:///$WORK/bench.sqlite3
fi
log "redis on $REDIS_PORT, database ${DATABASE_URL%%:*}, work dir $WORK"

manage() { (cd "$SITE" && "$PY" manage.py "$@"); }
manage migrate -v0
IDLE_USERS=$((IDLE_SMALL < IDLE_MAX ? IDLE_SMALL : IDLE_MAX))
manage bench_users --prefix bcast --count 1 --cookies-out "$WORK/bcast.cookies" --users-out "$WORK/bcast.users" >/dev/null
manage bench_users --prefix u --count "$SOCKETS" --cookies-out "$WORK/u.cookies" --users-out "$WORK/u.users" >/dev/null
manage bench_users --prefix idle --count "$IDLE_USERS" --cookies-out "$WORK/idle.cookies" --users-out "$WORK/idle.users" >/dev/null
log "created users: 1 broadcast user, $SOCKETS per-user users, $IDLE_USERS idle users"
if [[ " $SCENARIOS " == *" flaky "* || " $SCENARIOS " == *" deploy "* ]]; then
  manage bench_users --prefix f --count "$RECONNECT_CLIENTS" --cookies-out "$WORK/f.cookies" --users-out "$WORK/f.users" >/dev/null
  log "created $RECONNECT_CLIENTS reconnect users"
fi

# --- servers ------------------------------------------------------------------------------------
PORT=""
FIXED_PORT=""      # start_server binds this port when set (a restart in the deploy scenario)
SERVER_EXTRA=()    # extra `herald serve` arguments of the current scenario
start_server() { # $1 = server, $2 = log file; sets SERVER_PID and PORT
  PORT=${FIXED_PORT:-$(free_port)}
  case $1 in
    daphne)
      (cd "$SITE" && exec "$DAPHNE_BIN" -b 127.0.0.1 -p "$PORT" benchsite.asgi:application) >"$2" 2>&1 &
      SERVER_PID=$!
      ;;
    herald)
      [[ -n ${HERALD_BIN:-} ]] || return 1
      # Same Redis, same database, same SECRET_KEY and session engine as Daphne, and the
      # same Origin rule as the site's AllowedHostsOriginValidator.
      "$HERALD_BIN" serve --bind "127.0.0.1:$PORT" --redis "$REDIS_URL" \
        --secret-key "$SECRET_KEY" --session-engine "$SESSION_ENGINE" --django-db "$DATABASE_URL" \
        --allowed-origin 127.0.0.1,localhost "${HERALD_EXTRA[@]}" "${SERVER_EXTRA[@]}" >"$2" 2>&1 &
      SERVER_PID=$!
      ;;
    *) die "unknown server $1" ;;
  esac
  wait_port "$PORT" 30 || { log "$1 did not start: $(tail -5 "$2")"; stop_server; return 1; }
}
stop_server() { # SIGTERM, then SIGKILL if it is still shutting down after 15 s
  if [[ -n $SERVER_PID ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    local deadline=$((SECONDS + 15))
    while kill -0 "$SERVER_PID" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}

# False (with a note) once past BENCH_TIME_LIMIT; else flushes Redis for the next scenario.
fresh_start() {
  if ((SECONDS - START > TIME_LIMIT)); then
    note "$1 skipped: past BENCH_TIME_LIMIT=${TIME_LIMIT}s"
    return 1
  fi
  redis-cli -p "$REDIS_PORT" flushall >/dev/null
}

# CPU seconds (user + system) used so far by process $1, or by redis-server.
process_cpu() {
  awk -v hz="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); print ($12 + $13) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0
}
redis_cpu() {
  redis-cli -p "$REDIS_PORT" info cpu | tr -d '\r' |
    awk -F: '/^used_cpu_(sys|user):/{t += $2} END{print t + 0}'
}

# Runs one scenario on a fresh server and a flushed Redis, appends herald-load's JSON line
# (plus the count of application exceptions in the server log) to $RESULTS.
# Usage: scenario SERVER NAME [herald-load args...] [-- sender command...]
scenario() {
  local server=$1 name=$2
  shift 2
  fresh_start "$server/$name" || return 0
  local slog=$WORK/$server-$name.log
  if ! start_server "$server" "$slog"; then
    note "$server/$name not run: $server could not be started"
    return 0
  fi
  log "$server/$name: $*"
  local out redis_cpu0 server_cpu0
  redis_cpu0=$(redis_cpu)
  server_cpu0=$(process_cpu "$SERVER_PID")
  redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
  out=$("$HERALD_LOAD_BIN" --url "ws://127.0.0.1:$PORT$CLIENT_PATH" --server-pid "$SERVER_PID" \
    --threads "$CLIENT_THREADS" --label "$server/$name" "${LOAD_EXTRA[@]}" "$@" 2>>"$WORK/herald-load.log") || {
    note "$server/$name: herald-load failed: $(tail -3 "$WORK/herald-load.log")"
    stop_server
    return 0
  }
  local errors server_cpu redis_cpu_used
  server_cpu=$(awk -v a="$server_cpu0" -v b="$(process_cpu "$SERVER_PID")" 'BEGIN{print b - a}')
  redis_cpu_used=$(awk -v a="$redis_cpu0" -v b="$(redis_cpu)" 'BEGIN{print b - a}')
  errors=$(grep -c 'Exception inside application' "$slog" || true)
  redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' >"$WORK/commandstats.txt"
  printf '%s\n' "$out" | "$PY" -c '
import json, sys
r = json.loads(sys.stdin.read()); r["server_exceptions"] = int(sys.argv[1])
r["load_avg_end"] = sys.argv[2]
# CPU seconds the server process and redis-server used while the scenario ran (connects,
# sends and drains included): per frame, these hold on a shared machine where rates do not.
r["server_cpu_s"] = float(sys.argv[3]); r["redis_cpu_s"] = float(sys.argv[4])
# Where Redis spent it: calls and microseconds per command over the scenario (INFO
# commandstats after CONFIG RESETSTAT; a script'"'"'s inner calls are counted in its own line too).
cmds = {}
for line in open(sys.argv[5]):
    if line.startswith("cmdstat_"):
        name, _, fields = line[len("cmdstat_"):].strip().partition(":")
        kv = dict(f.split("=", 1) for f in fields.split(","))
        cmds[name] = {"calls": int(kv["calls"]), "usec": int(kv["usec"])}
r["redis_commands"] = cmds
print(json.dumps(r))' "$errors" "$(cut -d' ' -f1-3 /proc/loadavg)" "$server_cpu" "$redis_cpu_used" "$WORK/commandstats.txt" >>"$RESULTS"
  log "$server/$name: $("$PY" "$HERE/report.py" summary "$out")"
  stop_server
}

# idle_50k: IDLE_WANTED idle sockets over IDLE_PROCS fresh server processes (one herald-load
# per server, all at once), merged into one result: RSS per socket is the sum of every
# server's growth over the sum of connected sockets.
# Usage: scenario_multi SERVER NAME [herald-load args...]
scenario_multi() {
  local server=$1 name=$2
  shift 2
  fresh_start "$server/$name" || return 0
  local k pid per ports=() load_pids=()
  MULTI_PIDS=()
  for ((k = 0; k < IDLE_PROCS; k++)); do
    if ! start_server "$server" "$WORK/$server-$name-$k.log"; then
      note "$server/$name not run: server $k could not be started"
      for pid in "${MULTI_PIDS[@]}"; do SERVER_PID=$pid stop_server; done
      MULTI_PIDS=()
      return 0
    fi
    MULTI_PIDS+=("$SERVER_PID")
    ports+=("$PORT")
    SERVER_PID=""
  done
  log "$server/$name: $IDLE_WANTED sockets over $IDLE_PROCS processes: $*"
  for ((k = 0; k < IDLE_PROCS; k++)); do
    per=$((IDLE_WANTED / IDLE_PROCS + (k < IDLE_WANTED % IDLE_PROCS ? 1 : 0)))
    "$HERALD_LOAD_BIN" --url "ws://127.0.0.1:${ports[k]}/ws/tasks/" --server-pid "${MULTI_PIDS[k]}" \
      --threads "$CLIENT_THREADS" --label "$server/$name" --connections "$per" "$@" \
      >"$WORK/$name-$k.json" 2>>"$WORK/herald-load.log" &
    load_pids+=($!)
  done
  local failed=0
  for pid in "${load_pids[@]}"; do wait "$pid" || failed=1; done
  for pid in "${MULTI_PIDS[@]}"; do SERVER_PID=$pid stop_server; done
  MULTI_PIDS=()
  if ((failed)); then
    note "$server/$name: herald-load failed: $(tail -3 "$WORK/herald-load.log")"
    return 0
  fi
  local out
  out=$("$PY" "$HERE/report.py" merge "$IDLE_PROCS" "$WORK/$name"-*.json)
  rm -f "$WORK/$name"-*.json
  printf '%s\n' "$out" >>"$RESULTS"
  log "$server/$name: $("$PY" "$HERE/report.py" summary "$out")"
}

want() { [[ " $SCENARIOS " == *" $1 "* ]]; }

# --- reconnect scenarios --------------------------------------------------------------------------
RECONNECT_RESULTS=$WORK/reconnect.jsonl
: >"$RECONNECT_RESULTS"
reconnect_sender() {
  printf '%s\n' "$HERALD_LOAD_BIN" send mixed --redis-url "$REDIS_URL" --users-file "$WORK/f.users" \
    --per-user-rate 1 --broadcast-group task_bcast --broadcast-rate 2 --duration "$RECONNECT_SECS" \
    --channel-capacity "$RECONNECT_SENDER_CAPACITY"
}
# Appends herald-load's line, with the server's exceptions, herald_history_* counters from
# /metrics (summed over the given ports) and the scenario's events, to the reconnect results.
# Counters of a herald that is about to stop are saved first (metrics-save), and added in.
: >"$WORK/stopped-metrics.jsonl"
record_reconnect() { # $1 = herald-load output, $2 = exceptions, $3 = events, $4... = ports
  local out=$1 errors=$2 events=$3
  shift 3
  printf '%s\n' "$out" | "$PY" "$HERE/report.py" reconnect-record "$errors" "$events" \
    "$(cut -d' ' -f1-3 /proc/loadavg)" "$WORK/stopped-metrics.jsonl" "$@" >>"$RECONNECT_RESULTS"
  : >"$WORK/stopped-metrics.jsonl"
  log "$(tail -1 "$RECONNECT_RESULTS" | "$PY" "$HERE/report.py" reconnect-summary)"
}
# --- permessage-deflate scenario -------------------------------------------------------------------
# deflate: the broadcast scenario (SOCKETS sockets of one user, BCAST_SENDS messages from the
# Rust sender) once per guide message shape, with herald's compression off and on. The clients
# always offer permessage-deflate, as browsers do, so "off" is the server declining it (Daphne
# never accepts it). Lines go to results/deflate-*.jsonl; report.py deflate-table prints the
# table for docs/benchmarks.md.
DEFLATE_SHAPES=${BENCH_DEFLATE_SHAPES:-toast notification file task}
DEFLATE_RESULTS=$WORK/deflate.jsonl
: >"$DEFLATE_RESULTS"
scenario_deflate() { # $1 = server
  local server=$1 shape mode
  for shape in $DEFLATE_SHAPES; do
    for mode in off on; do
      [[ $server != herald && $mode == on ]] && continue
      SERVER_EXTRA=()
      [[ $mode == on ]] && SERVER_EXTRA=(--permessage-deflate)
      RESULTS=$DEFLATE_RESULTS scenario "$server" "deflate_${shape}_$mode" "${common[@]}" \
        --connections "$SOCKETS" --cookies-file "$WORK/bcast.cookies" --deflate \
        --expect-frames $((SOCKETS * BCAST_SENDS)) --deadline 150 --quiet-stop 10 \
        -- "$HERALD_LOAD_BIN" send broadcast --redis-url "$REDIS_URL" --group user_bcast00000 \
        --count "$BCAST_SENDS" --shape "$shape"
    done
  done
  SERVER_EXTRA=()
}
# --- scale scenario ---------------------------------------------------------------------------------
# scale_50k (herald only, run when named): IDLE_WANTED sockets over IDLE_PROCS herald processes
# (the fd limit) on three Redis shards, every socket subscribed to task_bcast, while the Rust
# sender's mixed plan sends SCALE_USER_RATE msgs/s to every idle user (several sockets each) and
# SCALE_BCAST_RATE msgs/s to task_bcast for SCALE_SECS, once all sockets are connected.
SCALE_SECS=${BENCH_SCALE_SECS:-30}
SCALE_USER_RATE=0.1
SCALE_BCAST_RATE=0.5
SCALE_RESULTS=$WORK/scale.jsonl
: >"$SCALE_RESULTS"
redis_cpu_port() {
  redis-cli -p "$1" info cpu | tr -d '\r' |
    awk -F: '/^used_cpu_(sys|user):/{t += $2} END{print t + 0}'
}
scenario_scale() { # $1 = server
  local server=$1 name=scale_50k
  if [[ $server != herald ]]; then
    note "scale_50k: herald only (Daphne's fan-out and idle cost are measured above)"
    return 0
  fi
  fresh_start "$server/$name" || return 0
  local k p per shard_ports=("$REDIS_PORT") shard_pids=() urls=(--redis-url "$REDIS_URL") ports=()
  local load_pids=() extra=()
  for k in 1 2; do
    p=$(free_port)
    redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis-$k.log" 2>&1 &
    shard_pids+=($!)
    shard_ports+=("$p")
    urls+=(--redis-url "redis://127.0.0.1:$p")
    extra+=(--redis "redis://127.0.0.1:$p")
  done
  for p in "${shard_ports[@]}"; do
    until redis-cli -p "$p" ping 2>/dev/null | grep -q PONG; do sleep 0.1; done
  done
  SERVER_EXTRA=("${extra[@]}")
  MULTI_PIDS=()
  for ((k = 0; k < IDLE_PROCS; k++)); do
    if ! start_server "$server" "$WORK/$server-$name-$k.log"; then
      note "$server/$name not run: server $k could not be started"
      break
    fi
    MULTI_PIDS+=("$SERVER_PID")
    ports+=("$PORT")
    SERVER_PID=""
  done
  SERVER_EXTRA=()
  if ((${#ports[@]} == IDLE_PROCS)); then
    local each bcast cpu0=() rcpu0=() total
    # As the mixed plan counts: floor(rate x duration) per stream; every socket also gets the
    # one "subscribed" answer to its subscribe frame.
    each=$("$PY" -c "print(int($SCALE_USER_RATE * $SCALE_SECS))")
    bcast=$("$PY" -c "print(int($SCALE_BCAST_RATE * $SCALE_SECS))")
    log "$server/$name: $IDLE_WANTED sockets over $IDLE_PROCS processes on 3 shards; $each msgs per user, $bcast broadcasts"
    for ((k = 0; k < IDLE_PROCS; k++)); do
      per=$((IDLE_WANTED / IDLE_PROCS + (k < IDLE_WANTED % IDLE_PROCS ? 1 : 0)))
      "$HERALD_LOAD_BIN" --url "ws://127.0.0.1:${ports[k]}/ws/tasks/" --server-pid "${MULTI_PIDS[k]}" \
        --threads "$CLIENT_THREADS" --label "$server/$name" --connections "$per" \
        --concurrency "$CONNECT_CONCURRENCY" --connect-timeout 60 --cookies-file "$WORK/idle.cookies" \
        --subscribe '{"action": "subscribe", "task_id": "bcast"}' \
        --expect-frames $((per * (each + bcast + 1))) --deadline $((SCALE_SECS + 120)) \
        >"$WORK/$name-$k.json" 2>>"$WORK/herald-load.log" &
      load_pids+=($!)
    done
    # The sender starts once every socket is open and subscribed (its frames are counted).
    local deadline=$((SECONDS + 400))
    while ((SECONDS < deadline)); do
      total=0
      for p in "${ports[@]}"; do
        total=$((total + $(curl -s "http://127.0.0.1:$p/metrics" | awk '$1 == "herald_frames_in_total" {print $2}' || echo 0)))
      done
      ((total >= IDLE_WANTED)) && break
      sleep 1
    done
    log "$server/$name: $total sockets subscribed; sending for ${SCALE_SECS}s"
    for pid in "${MULTI_PIDS[@]}"; do cpu0+=("$(process_cpu "$pid")"); done
    for p in "${shard_ports[@]}"; do rcpu0+=("$(redis_cpu_port "$p")"); done
    "$HERALD_LOAD_BIN" send mixed "${urls[@]}" --users-file "$WORK/idle.users" \
      --per-user-rate "$SCALE_USER_RATE" --broadcast-group task_bcast \
      --broadcast-rate "$SCALE_BCAST_RATE" --duration "$SCALE_SECS" \
      >"$WORK/$name-sender.json" 2>>"$WORK/herald-load.log"
    local failed=0
    for pid in "${load_pids[@]}"; do wait "$pid" || failed=1; done
    local server_cpu=0 redis_cpu_used=0
    for k in "${!MULTI_PIDS[@]}"; do
      server_cpu=$(awk -v t="$server_cpu" -v a="${cpu0[k]}" -v b="$(process_cpu "${MULTI_PIDS[k]}")" 'BEGIN{print t + b - a}')
    done
    for k in "${!shard_ports[@]}"; do
      redis_cpu_used=$(awk -v t="$redis_cpu_used" -v a="${rcpu0[k]}" -v b="$(redis_cpu_port "${shard_ports[k]}")" 'BEGIN{print t + b - a}')
    done
    if ((failed)); then
      note "$server/$name: herald-load failed: $(tail -3 "$WORK/herald-load.log")"
    else
      "$PY" "$HERE/report.py" scale-merge "$WORK/$name-sender.json" "$server_cpu" "$redis_cpu_used" \
        "$(cut -d' ' -f1-3 /proc/loadavg)" "$WORK/$name"-[0-9]*.json >>"$SCALE_RESULTS"
      log "$server/$name: $(tail -1 "$SCALE_RESULTS")"
    fi
  fi
  for pid in "${MULTI_PIDS[@]}"; do SERVER_PID=$pid stop_server; done
  MULTI_PIDS=()
  for pid in "${shard_pids[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
}
# flaky: one server, every client cut at random while the sender runs.
scenario_flaky() { # $1 = server
  local server=$1 name=flaky
  fresh_start "$server/$name" || return 0
  local slog=$WORK/$server-$name.log recover=() ports=()
  SERVER_EXTRA=()
  if [[ $server == herald ]]; then SERVER_EXTRA=(--history "$RECONNECT_HISTORY"); recover=(--recover); fi
  if ! start_server "$server" "$slog"; then
    note "$server/$name not run: $server could not be started"
    return 0
  fi
  [[ $server == herald ]] && ports=("$PORT")
  log "$server/$name: $RECONNECT_CLIENTS clients, cut every ~15 s for ~2 s, ${RECONNECT_SECS} s"
  local out sender
  mapfile -t sender < <(reconnect_sender)
  out=$("$HERALD_LOAD_BIN" flaky --url "ws://127.0.0.1:$PORT/ws/tasks/" "${recover[@]}" \
    --connections "$RECONNECT_CLIENTS" --cookies-file "$WORK/f.cookies" --cut-every 15 --offline 2 \
    --jitter 0.5 --threads "$CLIENT_THREADS" --quiet-stop 10 --deadline 60 --label "$server/$name" \
    -- "${sender[@]}" 2>>"$WORK/herald-load.log") || {
    note "$server/$name: herald-load failed: $(tail -3 "$WORK/herald-load.log")"
    stop_server
    return 0
  }
  record_reconnect "$out" "$(grep -c 'Exception inside application' "$slog" || true)" "" "${ports[@]}"
  stop_server
  SERVER_EXTRA=()
}
# deploy: two servers on the one Redis, clients spread over both; 10 s into the sender A is
# stopped (SIGTERM) and started again on its port, 20 s later B the same.
scenario_deploy() { # $1 = server
  local server=$1 name=deploy
  fresh_start "$server/$name" || return 0
  local recover=() pids=() ports=() k pid
  SERVER_EXTRA=()
  if [[ $server == herald ]]; then SERVER_EXTRA=(--history "$RECONNECT_HISTORY"); recover=(--recover); fi
  for k in 0 1; do
    if ! start_server "$server" "$WORK/$server-$name-$k.log"; then
      note "$server/$name not run: server $k could not be started"
      for pid in "${pids[@]}"; do SERVER_PID=$pid stop_server; done
      return 0
    fi
    pids+=("$SERVER_PID")
    ports+=("$PORT")
    SERVER_PID=""
  done
  MULTI_PIDS=("${pids[@]}")
  log "$server/$name: $RECONNECT_CLIENTS clients over 2 servers, each stopped and restarted, ${RECONNECT_SECS} s"
  local sender out_file=$WORK/$name-$server.json err_file=$WORK/$name-$server.err events=() t0
  mapfile -t sender < <(reconnect_sender)
  "$HERALD_LOAD_BIN" flaky --url "ws://127.0.0.1:${ports[0]}/ws/tasks/" \
    --url "ws://127.0.0.1:${ports[1]}/ws/tasks/" "${recover[@]}" \
    --connections "$RECONNECT_CLIENTS" --cookies-file "$WORK/f.cookies" \
    --threads "$CLIENT_THREADS" --quiet-stop 10 --deadline 90 --label "$server/$name" \
    -- "${sender[@]}" >"$out_file" 2>"$err_file" &
  local load_pid=$! deadline=$((SECONDS + 300))
  touch "$err_file"
  until grep -q "sender started" "$err_file"; do
    if ! kill -0 "$load_pid" 2>/dev/null || ((SECONDS > deadline)); then break; fi
    sleep 0.2
  done
  t0=$SECONDS
  for k in 0 1; do
    sleep $((k == 0 ? 10 : 20))
    SERVER_PID=${pids[k]}
    if [[ $server == herald ]]; then
      "$PY" "$HERE/report.py" metrics "${ports[k]}" >>"$WORK/stopped-metrics.jsonl"
    fi
    stop_server
    events+=("t+$((SECONDS - t0))s stopped $k")
    FIXED_PORT=${ports[k]}
    if start_server "$server" "$WORK/$server-$name-$k-restarted.log"; then
      pids[k]=$SERVER_PID
      events+=("t+$((SECONDS - t0))s restarted $k")
    else
      events+=("t+$((SECONDS - t0))s restart of $k failed")
    fi
    FIXED_PORT=""
    SERVER_PID=""
    MULTI_PIDS=("${pids[@]}")
  done
  wait "$load_pid" || true
  cat "$err_file" >>"$WORK/herald-load.log"
  local out
  out=$(tail -1 "$out_file")
  if [[ -z $out ]]; then
    note "$server/$name: herald-load failed: $(tail -3 "$err_file")"
  else
    local errors
    errors=$(cat "$WORK/$server-$name"-*.log | grep -c 'Exception inside application' || true)
    if [[ $server == herald ]]; then
      record_reconnect "$out" "$errors" "$(IFS=';'; echo "${events[*]}")" "${ports[@]}"
    else
      record_reconnect "$out" "$errors" "$(IFS=';'; echo "${events[*]}")"
    fi
  fi
  for pid in "${pids[@]}"; do SERVER_PID=$pid stop_server; done
  MULTI_PIDS=()
  SERVER_EXTRA=()
}

SEND=("$PY" "$HERE/sender.py")
for server in $SERVERS; do
  if [[ $server == herald && -z ${HERALD_BIN:-} ]]; then
    note "herald: not measured, \`herald serve\` is not available yet (crates/herald-cli)."
    continue
  fi
  common=(--concurrency "$CONNECT_CONCURRENCY" --connect-timeout 30)
  if want broadcast_py; then
    scenario "$server" broadcast_py "${common[@]}" --connections "$SOCKETS" \
      --cookies-file "$WORK/bcast.cookies" --expect-frames $((SOCKETS * BCAST_SENDS)) \
      --deadline 150 --quiet-stop 10 \
      -- "${SEND[@]}" broadcast --group user_bcast00000 --count "$BCAST_SENDS"
  fi
  if want broadcast_rust; then
    if ((RUST_SENDER)); then
      scenario "$server" broadcast_rust "${common[@]}" --connections "$SOCKETS" \
        --cookies-file "$WORK/bcast.cookies" --expect-frames $((SOCKETS * BCAST_SENDS)) \
        --deadline 150 --quiet-stop 10 \
        -- "$HERALD_LOAD_BIN" send broadcast --redis-url "$REDIS_URL" --group user_bcast00000 --count "$BCAST_SENDS"
    else
      note "broadcast_rust/peruser_rust: not run, this herald-load has no Rust sender (\`herald-load send\`) yet."
    fi
  fi
  if want bcast_paced_py; then
    # Daphne delivers a few thousand frames/s (3.0k in the committed run), so its run is cut at
    # the deadline and shows as delivered %.
    scenario "$server" bcast_paced_py "${common[@]}" --connections "$SOCKETS" \
      --cookies-file "$WORK/bcast.cookies" --expect-frames $((SOCKETS * BCAST_RATE * BCAST_PACED_SECS)) \
      --deadline 60 --quiet-stop 10 \
      -- "${SEND[@]}" paced --users-file "$WORK/bcast.users" --rate "$BCAST_RATE" --duration "$BCAST_PACED_SECS"
  fi
  if want bcast_paced_rust && ((RUST_SENDER)); then
    scenario "$server" bcast_paced_rust "${common[@]}" --connections "$SOCKETS" \
      --cookies-file "$WORK/bcast.cookies" --expect-frames $((SOCKETS * BCAST_RATE * BCAST_PACED_SECS)) \
      --deadline 60 --quiet-stop 10 \
      -- "$HERALD_LOAD_BIN" send paced --redis-url "$REDIS_URL" --users-file "$WORK/bcast.users" --rate "$BCAST_RATE" --duration "$BCAST_PACED_SECS"
  fi
  if want peruser_py; then
    scenario "$server" peruser_py "${common[@]}" --connections "$SOCKETS" \
      --cookies-file "$WORK/u.cookies" --expect-frames $((SOCKETS * PER_USER)) \
      --deadline 120 --quiet-stop 10 \
      -- "${SEND[@]}" per-user --users-file "$WORK/u.users" --per-user "$PER_USER" --procs 2 --concurrency 8
  fi
  if want peruser_rust && ((RUST_SENDER)); then
    scenario "$server" peruser_rust "${common[@]}" --connections "$SOCKETS" \
      --cookies-file "$WORK/u.cookies" --expect-frames $((SOCKETS * PER_USER)) \
      --deadline 120 --quiet-stop 10 \
      -- "$HERALD_LOAD_BIN" send per-user --redis-url "$REDIS_URL" --users-file "$WORK/u.users" --per-user "$PER_USER" \
      --batch 1 "${PERUSER_SEND_EXTRA[@]}"
  fi
  if want peruser_batch && ((RUST_SENDER)); then
    # Per-user sends through group_send_many, pipelines of 200 (100 messages per script call),
    # BATCH_PER_USER per user: the sender's rate goes up, and what it sent then waits in
    # Redis for the server's readers. Every socket of one server process shares one Redis key
    # (channels_redis's process-local channels), so the sender gets BATCH_CAPACITY of headroom
    # there: at channels_redis's default of 100 a sender this fast drops what the readers
    # have not yet taken, whoever the server is.
    scenario "$server" peruser_batch "${common[@]}" --connections "$SOCKETS" \
      --cookies-file "$WORK/u.cookies" --expect-frames $((SOCKETS * BATCH_PER_USER)) \
      --deadline 120 --quiet-stop 10 \
      -- "$HERALD_LOAD_BIN" send per-user --redis-url "$REDIS_URL" --users-file "$WORK/u.users" \
      --per-user "$BATCH_PER_USER" --capacity "$BATCH_CAPACITY" "${PERUSER_SEND_EXTRA[@]}"
  fi
  if want paced; then
    scenario "$server" paced "${common[@]}" --connections "$SOCKETS" \
      --cookies-file "$WORK/u.cookies" --expect-frames $((PACED_RATE * PACED_SECS)) \
      --deadline $((PACED_SECS + 90)) --quiet-stop 10 \
      -- "${SEND[@]}" paced --users-file "$WORK/u.users" --rate "$PACED_RATE" --duration "$PACED_SECS"
  fi
  if want paced_rust && ((RUST_SENDER)); then
    # The same pace from the Rust sender (one round trip per group_send): what is left is the
    # server's own publish-to-socket latency, without channels_redis's four round trips and
    # the Python event loop between `sent_at` and the message reaching Redis.
    scenario "$server" paced_rust "${common[@]}" --connections "$SOCKETS" \
      --cookies-file "$WORK/u.cookies" --expect-frames $((PACED_RATE * PACED_SECS)) \
      --deadline $((PACED_SECS + 90)) --quiet-stop 10 \
      -- "$HERALD_LOAD_BIN" send paced --redis-url "$REDIS_URL" --users-file "$WORK/u.users" --rate "$PACED_RATE" --duration "$PACED_SECS"
  fi
  if want burst_1m; then
    # 1,000,000 deliveries offered within one second; Daphne gets the same offer and the
    # deadline, and shows as delivered %.
    scenario "$server" burst_1m "${common[@]}" --connections "$BIG_SOCKETS" \
      --cookies-file "$WORK/bcast.cookies" --expect-frames $((BIG_SOCKETS * BIG_BURST_SENDS)) \
      --deadline 90 --quiet-stop 10 \
      -- "$HERALD_LOAD_BIN" send paced --redis-url "$REDIS_URL" --users-file "$WORK/bcast.users" \
      --rate "$BIG_BURST_SENDS" --duration 1
  fi
  if want burst_1m_py; then
    scenario "$server" burst_1m_py "${common[@]}" --connections "$BIG_SOCKETS" \
      --cookies-file "$WORK/bcast.cookies" --expect-frames $((BIG_SOCKETS * BIG_BURST_SENDS)) \
      --deadline 90 --quiet-stop 10 \
      -- "${SEND[@]}" paced --users-file "$WORK/bcast.users" --rate "$BIG_BURST_SENDS" --duration 1
  fi
  if want steady_10k; then
    scenario "$server" steady_10k "${common[@]}" --connections "$BIG_SOCKETS" \
      --cookies-file "$WORK/bcast.cookies" --expect-frames $((BIG_SOCKETS * BIG_STEADY_SECS * 2)) \
      --deadline $((BIG_STEADY_SECS + 60)) --quiet-stop 10 \
      -- "$HERALD_LOAD_BIN" send paced --redis-url "$REDIS_URL" --users-file "$WORK/bcast.users" \
      --rate 2 --duration "$BIG_STEADY_SECS"
  fi
  if want idle_10k; then
    scenario "$server" idle_10k "${common[@]}" --connections "$IDLE_SMALL" \
      --cookies-file "$WORK/idle.cookies" --deadline "$IDLE_HOLD_SECS"
  fi
  if want idle_max; then
    scenario "$server" idle_max "${common[@]}" --connections "$IDLE_MAX" \
      --cookies-file "$WORK/idle.cookies" --deadline 5
  fi
  if want idle_50k; then
    if ((IDLE_PROCS > 1)); then
      scenario_multi "$server" idle_50k "${common[@]}" --cookies-file "$WORK/idle.cookies" --deadline 5
    else
      note "$server/idle_50k not run: one process can hold all $IDLE_WANTED sockets here, so idle_max is that case."
    fi
  fi
  if want burst_10k; then
    scenario "$server" burst_10k --burst --connect-timeout 60 --connections "$BURST" \
      --cookies-file "$WORK/idle.cookies" --expect-frames 0 --deadline 1
  fi
  if want flaky; then scenario_flaky "$server"; fi
  if want deploy; then scenario_deploy "$server"; fi
  if want deflate; then scenario_deflate "$server"; fi
  if want scale_50k; then scenario_scale "$server"; fi
done

# --- report ----------------------------------------------------------------------------------------
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- crates benches || echo "+dirty")
STAMP=$(date -u +%Y-%m-%dT%H:%MZ)
mkdir -p "$HERE/results"
RAW=benches/fanout/results/fanout-$(date -u +%Y%m%dT%H%M)-${COMMIT%%+*}.jsonl
if [[ ${BENCH_NO_DOC:-0} == 1 ]]; then
  log "BENCH_NO_DOC=1: results in $RESULTS"
  BENCH_KEEP=1
  exit 0
fi
# Copies a named-only scenario's lines to results/KIND-<time>-<commit>.jsonl, after a first
# line with the run's commit, machine and load average; prints the path.
save_raw() { # $1 = kind, $2 = lines
  local raw
  raw=benches/fanout/results/$1-$(date -u +%Y%m%dT%H%M)-${COMMIT%%+*}.jsonl
  {
    printf '{"meta": true, "commit": "%s", "machine": "%s", "load_avg_start": "%s", "load_avg_end": "%s"}\n' \
      "$COMMIT" "$(nproc) CPUs, $(uname -r)" "$LOAD_AT_START" "$(cut -d' ' -f1-3 /proc/loadavg)"
    cat "$2"
  } >"$ROOT/$raw"
  printf '%s\n' "$raw"
}
if [[ -s $RECONNECT_RESULTS ]]; then
  log "reconnect results: $(save_raw reconnect "$RECONNECT_RESULTS") (docs/benchmarks.md, section \"Reconnect\", is written from them by hand)"
fi
if [[ -s $SCALE_RESULTS ]]; then
  log "scale results: $(save_raw scale "$SCALE_RESULTS") (docs/scaling.md quotes them)"
fi
if [[ -s $DEFLATE_RESULTS ]]; then
  DEFLATE_RAW=$(save_raw deflate "$DEFLATE_RESULTS")
  "$PY" "$HERE/report.py" deflate-table "$ROOT/$DEFLATE_RAW"
  log "deflate results: $DEFLATE_RAW (the table above goes to docs/benchmarks.md, section \"Compression\", by hand)"
fi
if [[ ! -s $RESULTS ]]; then
  log "no fan-out results: docs/benchmarks.md left as it is"
  exit 0
fi
cp "$RESULTS" "$ROOT/$RAW"
note "Connect concurrency $CONNECT_CONCURRENCY for every scenario but the burst (Daphne's default channels_redis pool of 100 Redis connections fails connects beyond that: see the burst row)."
note "Sessions: Django db engine on ${DATABASE_URL%%:*}; idle scenarios cycle $IDLE_USERS users' cookies (several sockets per user); the broadcast group is one user with $SOCKETS sockets."
note "Daphne's channels_redis host sets socket_timeout=None: redis-py 8's default 5 s equals the BZPOPMIN timeout, so an idle receive() raises TimeoutError and kills consumers."
note "channels_redis default capacity (100 per process key): messages over it are dropped silently, which shows as delivered < 100 %."
note "Load average (1/5/15 min) at start: $LOAD_AT_START, at end: $(cut -d' ' -f1-3 /proc/loadavg) (2 cores; anything else running skews both servers' numbers)."
[[ $QUICK == 1 ]] && note "BENCH_QUICK=1: reduced sizes ($SOCKETS sockets, $BCAST_SENDS broadcasts, $PER_USER per user, $PACED_RATE msgs/s, idle $IDLE_SMALL/$IDLE_MAX, burst $BURST) — not comparable with the issue's numbers."
versions=$("$PY" - <<'EOF'
from importlib.metadata import version
print(", ".join(f"{p} {version(p)}" for p in ["daphne", "channels", "channels-redis", "redis", "Django", "Twisted"]))
EOF
)
versions="$versions, $(redis-server --version | awk '{print $1, $2, $3}' | sed 's/v=//'), $(rustc --version | awk '{print $1, $2}'), Python $("$PY" -c 'import platform; print(platform.python_version())')"
machine="$(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), $(free -g | awk '/Mem:/{print $2}') GiB RAM, Linux $(uname -r), RLIMIT_NOFILE $NOFILE"
"$PY" - "$WORK/meta.json" "$STAMP" "$machine" "$COMMIT" "$versions" "$NOTES" "$RAW" <<'EOF'
import json, sys
out, date, machine, commit, versions, notes, raw = sys.argv[1:8]
lines = [l.strip() for l in open(notes) if l.strip()]
json.dump({"date": date, "machine": machine, "commit": commit, "versions": versions,
           "notes": list(dict.fromkeys(lines)), "raw": raw}, open(out, "w"))
EOF
"$PY" "$HERE/report.py" "$RESULTS" "$WORK/meta.json" "$ROOT/docs/benchmarks.md"
log "wrote docs/benchmarks.md (section \"Fan-out: herald vs Daphne\") and $RAW in $((SECONDS - START)) s"
