#!/usr/bin/env bash
# The "receiver under load" stage of `make bench` (called by bench/run.sh with the emulators up and
# their environment exported): the same load against the Rust receiver under `cargo lambda watch
# --release`, a Flask app under gunicorn and an Express app, each on fresh tables and queues made from
# template.yaml, one after the other in this run. Each server gets WORKERS processes/instances:
# cargo lambda watch --concurrency (one request at a time per instance, as Lambda), gunicorn sync
# workers (the same model); Node serves everything from one process, as it would.
#
# The Rust receiver runs with --ignore-changes: an edit elsewhere in the tree must not rebuild and
# restart it mid-run.
#
# Usage: bench/load.sh RESULTS_DIR      Knobs: BENCH_LOAD_EVENTS (3000), BENCH_CONCURRENCY (16),
#                                       BENCH_WORKERS (4), BENCH_PORT (9310), BENCH_PROFILE (1)
#
# With BENCH_PROFILE=1 and perf installed, a system-wide `perf record` runs while the Rust receiver and
# the no-op function take their load; bench/profile.py splits its samples by process and component
# (profile.json). The functions are built with symbols for it (CARGO_PROFILE_RELEASE_STRIP=false:
# the same code, the symbol table kept).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS=$1
EVENTS=${BENCH_LOAD_EVENTS:-3000}
CONCURRENCY=${BENCH_CONCURRENCY:-16}
WORKERS=${BENCH_WORKERS:-4}
PORT=${BENCH_PORT:-9310}
SECRET=whsec_bench_0123456789abcdefghijklmnopqrstuv
cd "$ROOT"
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
DRIVER=$TARGET/release/bench-driver
say() { printf 'bench load: %s\n' "$*" >&2; }

perf_pid=
profile_start() {
  [[ ${BENCH_PROFILE:-1} == 1 ]] && command -v perf >/dev/null || return 0
  perf record -F 499 -a -o "$RESULTS/perf.data" >"$RESULTS/perf.log" 2>&1 &
  perf_pid=$!
}
profile_stop() {
  [[ -n $perf_pid ]] || return 0
  kill -INT "$perf_pid" 2>/dev/null || true
  wait "$perf_pid" 2>/dev/null || true
  perf_pid=
  perf script -i "$RESULTS/perf.data" -F pid,tid,ip,sym,dso 2>>"$RESULTS/perf.log" |
    python3 bench/profile.py receiver bench-noop-http >"$RESULTS/profile.json" ||
    say "profile: perf script failed (see $RESULTS/perf.log)"
  rm -f "$RESULTS/perf.data"
}

server_pid=
stop_server() {
  if [[ -n $server_pid ]]; then
    kill -TERM -- "-$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}
trap 'profile_stop; stop_server' EXIT

# Fresh tables and queues; exports DEDUP_TABLE_NAME, EVENT_QUEUE_URL, ...
resources() {
  eval "$(python3 infra/resources.py create --prefix "bench$1$RANDOM")"
}

wait_for() { # URL: until something answers HTTP (the first request may wait for a build), or the
  # server ($server_pid) has died (a receiver that cannot boot must not hang the run)
  local deadline=$((SECONDS + 900))
  until curl -s -o /dev/null -m 900 -X POST "$1"; do
    ((SECONDS < deadline)) || { say "nothing answers on $1"; return 1; }
    kill -0 "$server_pid" 2>/dev/null || { say "the server exited before answering (see $RESULTS)"; return 1; }
    sleep 0.5
  done
}

load() { # LABEL URL PROCESS-PATTERN [SIDE-PATTERN]
  local args=(load --label "$1" --url "$2" --events "$EVENTS" --concurrency "$CONCURRENCY"
    --process "$3" --json "$RESULTS/load-$1.json")
  [[ -n ${4:-} ]] && args+=(--side-process "$4")
  "$DRIVER" "${args[@]}" >/dev/null || say "$1: not every answer was a 200 (see $RESULTS/load-$1.json)"
}

# ---- Rust: the receiver binary under cargo lambda watch, as `make dev` runs it -------------------
resources rust
env_file=$RESULTS/rust.env
{
  for var in DEDUP_TABLE_NAME EVENT_QUEUE_URL AWS_ENDPOINT_URL_DYNAMODB AWS_ENDPOINT_URL_SQS \
    AWS_REGION AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_EC2_METADATA_DISABLED; do
    echo "$var=${!var}"
  done
  echo "STRIPE_WEBHOOK_SECRET=$SECRET"
  echo "STRIPE_LIVEMODE=false"
  echo "RUST_LOG=info"
} >"$env_file"
say "rust: cargo lambda watch --release --concurrency $WORKERS"
CARGO_PROFILE_RELEASE_STRIP=false setsid cargo lambda watch --release --ignore-changes --concurrency "$WORKERS" --invoke-address 127.0.0.1 \
  --invoke-port "$PORT" --env-file "$env_file" >"$RESULTS/rust-watch.log" 2>&1 &
server_pid=$!
url=http://127.0.0.1:$PORT/lambda-url/receiver/webhooks/stripe
wait_for "$url"
noop_url=http://127.0.0.1:$PORT/lambda-url/bench-noop-http/webhooks/stripe
wait_for "$noop_url"
profile_start
load rust "$url" /release/receiver cargo-lambda
# The floor in the same harness: a lambda_http function that answers 200 without reading the request,
# served by the same watch process (its URL names the binary; built by the wait above).
load noop "$noop_url" /release/bench-noop-http cargo-lambda
profile_stop
stop_server

# ---- Flask + stripe-python + boto3 under gunicorn ----------------------------------------------------
resources flask
say "flask: gunicorn -w $WORKERS (sync workers)"
STRIPE_WEBHOOK_SECRET=$SECRET setsid gunicorn -w "$WORKERS" -b "127.0.0.1:$PORT" \
  --chdir bench/python --log-level warning flask_receiver:app >"$RESULTS/flask.log" 2>&1 &
server_pid=$!
url=http://127.0.0.1:$PORT/webhooks/stripe
wait_for "$url"
load flask "$url" gunicorn
stop_server

# ---- Express + stripe-node + AWS SDK v3 -------------------------------------------------------------
resources express
say "express: one node process"
STRIPE_WEBHOOK_SECRET=$SECRET PORT=$PORT setsid node bench/node/express_receiver.js \
  >"$RESULTS/express.log" 2>&1 &
server_pid=$!
wait_for "$url"
load express "$url" express_receiver.js
stop_server
