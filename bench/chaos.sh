#!/usr/bin/env bash
# `make chaos` / `make chaos-short`: Stripe-like deliveries of generated customer histories through
# receiver -> SQS -> processor while a fault proxy refuses, delays and cuts the functions' connections
# to DynamoDB and SQS and the processor is killed mid-batch; exits non-zero if any event was lost, any
# effect applied twice, a customer's state differs from the in-order history, a notification is missing,
# or the DLQ holds anything but the poison messages. See bench/driver/src/chaos.rs.
#
#   bash bench/chaos.sh full     1150 customers (>= 10 000 events), ~8.5 minutes
#   bash bench/chaos.sh short    112 customers (~1 000 events), ~1.5 minutes once built
# Extra arguments go to `bench-driver chaos` (e.g. --kill 0.2 --cut 0.05 --concurrency 32).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${STRIPE_PIPELINE_CACHE:-$HOME/.cache/stripe-webhook-pipeline}
VENV=${STRIPE_PIPELINE_VENV:-$CACHE/venv}
MODE=${1:-short}
shift || true
cd "$ROOT"

case $MODE in
  full) customers=1150 ;;
  short) customers=112 ;;
  *) echo "usage: bench/chaos.sh full|short [bench-driver chaos options]" >&2; exit 2 ;;
esac

bash infra/setup.sh
export PATH=$VENV/bin:$PATH
export AWS_EC2_METADATA_DISABLED=true
started_emulators=false
bash infra/emulators.sh status >/dev/null 2>&1 || started_emulators=true
cleanup() { if $started_emulators; then bash infra/emulators.sh stop || true; fi; }
trap cleanup EXIT
bash infra/emulators.sh start
eval "$(bash infra/emulators.sh env)"

# The debug profile: the run is bound by the emulators, and CI has the dependencies built already.
cargo build --quiet -p bench-driver
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
OUT=$TARGET/chaos
mkdir -p "$OUT"
# stdout carries the functions' EMF metric lines: kept in a file, not on the terminal.
"$TARGET/debug/bench-driver" chaos --customers "$customers" --json "$OUT/$MODE.json" "$@" >"$OUT/$MODE-metrics.log"
