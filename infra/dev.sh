#!/usr/bin/env bash
# `make dev`: the whole pipeline locally. Both functions under `cargo lambda watch` (rebuilt on every
# change), talking to the local emulators through tables and queues made from template.yaml with the
# prefix "dev", and a poller (`stripe-webhooks poll`) feeding the event queue to the processor the way
# the Lambda SQS event source mapping does.
#
# Env knobs: DEV_PORT (9000), DEV_PREFIX (dev), STRIPE_WEBHOOK_SECRET (comma-separated whsec_
# secrets; default: one generated once and kept in .local/webhook-secret), DEV_POLLER (invoke: the
# processor served by cargo lambda watch, rebuilt on change; in-process: the processor compiled into
# the CLI; off: no poller), DEV_POLL_ARGS (extra `poll` options, e.g. "--visibility-timeout 10"),
# DEV_STATE (.local: the generated secret and the functions' env file).
# Ctrl-C stops the poller and cargo lambda watch, and the emulators too if this script started them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${STRIPE_PIPELINE_CACHE:-$HOME/.cache/stripe-webhook-pipeline}
VENV=${STRIPE_PIPELINE_VENV:-$CACHE/venv}
export STRIPE_PIPELINE_CACHE=$CACHE STRIPE_PIPELINE_VENV=$VENV
DEV_PORT=${DEV_PORT:-9000}
DEV_PREFIX=${DEV_PREFIX:-dev}
DEV_POLLER=${DEV_POLLER:-invoke}
DEV_POLL_ARGS=${DEV_POLL_ARGS:-}
# Where the generated secret and the functions' env file live (tests point it elsewhere).
STATE=${DEV_STATE:-$ROOT/.local}
cd "$ROOT"

say() { printf 'dev: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

bash infra/setup.sh
export PATH=$VENV/bin:$PATH

# Fail now rather than after the emulators start: a second `make dev` still running, say.
if (exec 3<>"/dev/tcp/127.0.0.1/$DEV_PORT") 2>/dev/null; then
  die "port $DEV_PORT is already in use (another \`make dev\`?); stop it or set DEV_PORT"
fi
case $DEV_POLLER in
  invoke | in-process | off) ;;
  *) die "DEV_POLLER must be invoke, in-process or off (got \"$DEV_POLLER\")" ;;
esac

started_emulators=false
bash infra/emulators.sh status >/dev/null 2>&1 || started_emulators=true
watch_pid=
poller_pid=
cleanup() {
  trap - EXIT INT TERM
  # The poller first: it finishes the batch in hand (a batch left half done is only redelivered after
  # the visibility timeout), then cargo lambda watch, which may be serving that batch.
  if [[ -n $poller_pid ]]; then
    kill -TERM -- "-$poller_pid" 2>/dev/null || true
    wait "$poller_pid" 2>/dev/null || true
  fi
  # cargo lambda watch runs in its own process group (below), so its cargo and function processes
  # stop with it whether we got Ctrl-C, a TERM from a supervisor, or an error.
  if [[ -n $watch_pid ]]; then
    kill -TERM -- "-$watch_pid" 2>/dev/null || true
    wait "$watch_pid" 2>/dev/null || true
  fi
  if $started_emulators; then
    bash infra/emulators.sh stop || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bash infra/emulators.sh start
eval "$(bash infra/emulators.sh env)"

mkdir -p "$STATE"
# One local secret per clone, kept so that a `stripe listen` session or a saved request stays valid.
if [[ ! -s $STATE/webhook-secret ]]; then
  # pipefail aside: head closing the pipe makes tr die of SIGPIPE.
  random=$(set +o pipefail; LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32)
  (umask 077 && echo "whsec_$random" >"$STATE/webhook-secret")
fi
local_secret=$(<"$STATE/webhook-secret")
STRIPE_WEBHOOK_SECRET=${STRIPE_WEBHOOK_SECRET:-$local_secret}
[[ $STRIPE_WEBHOOK_SECRET != *"'"* && $STRIPE_WEBHOOK_SECRET != *[[:space:]]* ]] ||
  die "STRIPE_WEBHOOK_SECRET must not contain quotes or spaces"

# The functions' environment as the template defines it (parameters at their defaults), with the
# local tables and queues in place of the deployed ones.
resources=$(python3 infra/resources.py create --prefix "$DEV_PREFIX" --with-function-env)
eval "$resources"

# cargo lambda watch does pass its own environment on to the functions, but an env file makes the
# set explicit and wins over anything stray in the shell. Not --env-var: it splits values at commas,
# which would cut a list of signing secrets apart.
env_file=$STATE/dev.env
{
  sed -E "s/^export ([A-Za-z_][A-Za-z0-9_]*)=(.*)$/\1=\2/" <<<"$resources"
  echo "STRIPE_WEBHOOK_SECRET='$STRIPE_WEBHOOK_SECRET'"
  for var in AWS_ENDPOINT_URL_DYNAMODB AWS_ENDPOINT_URL_SQS AWS_ENDPOINT_URL_SECRETS_MANAGER AWS_ENDPOINT_URL_SESV2 AWS_ENDPOINT_URL_SSM \
    AWS_REGION AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_EC2_METADATA_DISABLED; do
    echo "$var='${!var}'"
  done
  echo "RUST_LOG='${RUST_LOG:-info}'"
} >"$env_file"
chmod 600 "$env_file"

# The CLI (send, status, dlq, backfill, and the poller). Built once here; the first build compiles the
# AWS SDK crates for it, a few minutes on 2 cores.
if [[ $DEV_POLLER != off || ! -x ${CARGO_TARGET_DIR:-$ROOT/target}/debug/stripe-webhooks ]]; then
  say "building the stripe-webhooks CLI (cargo build -p stripe-webhooks)"
  cargo build --quiet -p stripe-webhooks
fi
cli=${CARGO_TARGET_DIR:-$ROOT/target}/debug/stripe-webhooks
cli_shown=$cli
[[ $cli == "$ROOT"/* ]] && cli_shown=${cli#"$ROOT"/}

url="http://127.0.0.1:$DEV_PORT/lambda-url/receiver/webhooks/stripe"
case $DEV_POLLER in
  invoke) poller_line="the processor served by cargo lambda watch (rebuilt on change)" ;;
  in-process) poller_line="the processor built into the CLI (restart make dev after changing it)" ;;
  off) poller_line="off (DEV_POLLER=off); feed it with: $cli_shown --env-file .local/dev.env poll --invoke http://127.0.0.1:$DEV_PORT" ;;
esac

# Both functions built before anything is served: cargo lambda watch otherwise compiles a function on
# its first request, and a signed event sent the moment the URL is printed would wait minutes or be
# answered 500. (`cargo lambda watch` builds the same debug artifacts, so its own build is then a no-op.)
say "building the receiver and the processor (cargo build -p receiver -p processor)"
cargo build --quiet -p receiver -p processor

# Long options on purpose: in cargo-lambda 1.9 `-p` is --package and `-a` does not exist
# (the short forms are -A/-P).
setsid cargo lambda watch --invoke-address 127.0.0.1 --invoke-port "$DEV_PORT" --env-file "$env_file" &
watch_pid=$!

# Ready means the receiver answers: a GET (405, one log line) starts it under cargo lambda watch. Only
# then is the URL printed.
say "waiting for the receiver to answer on $url"
ready=false
for _ in $(seq 1 300); do
  kill -0 "$watch_pid" 2>/dev/null || die "cargo lambda watch exited before the receiver answered"
  status=$(python3 - "$url" <<'PY' 2>/dev/null || true
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=60)
    print(200)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print(0)
PY
)
  if [[ $status =~ ^4[0-9][0-9]$ ]]; then
    ready=true
    break
  fi
  sleep 1
done
$ready || die "the receiver did not answer on $url within 5 minutes"
cat >&2 <<EOF

  Webhook URL:        $url
  Local secret:       $local_secret
  Secrets in use:     $STRIPE_WEBHOOK_SECRET
  Tables and queues:  prefix "$DEV_PREFIX" (env in .local/dev.env)

  To forward real test-mode events from Stripe:
    stripe listen --forward-to $url
  \`stripe listen\` prints its own whsec_ secret; restart with both accepted (comma-separated):
    STRIPE_WEBHOOK_SECRET=$local_secret,<listen secret> make dev

  Poller:             event queue -> $poller_line;
                      batches of up to 10 or 1 s, a failed message is retried after the queue's
                      visibility timeout (200 s) and dead-lettered after 5 receives
  Send a signed fixture (offline \`stripe trigger\`):
    $cli_shown send invoice.paid
  What became of it, and the dead-letter queue:
    $cli_shown --env-file .local/dev.env status <evt_id>
    $cli_shown --env-file .local/dev.env dlq list
  The console (today's payments, failures, disputes, DLQ), on http://127.0.0.1:8787/:
    make console

EOF

# The poller gets the same environment as the functions (queue URL, tables, emulator endpoints), and
# its own process group so a TERM reaches only it. With --invoke it first waits for cargo lambda watch
# to build the processor, so no message is taken before it can be processed.
if [[ $DEV_POLLER != off ]]; then
  poll_target=()
  [[ $DEV_POLLER == invoke ]] && poll_target=(--invoke "http://127.0.0.1:$DEV_PORT")
  # shellcheck disable=SC2086 # DEV_POLL_ARGS is a list of options
  setsid "$cli" --env-file "$env_file" poll "${poll_target[@]}" $DEV_POLL_ARGS &
  poller_pid=$!
fi

# Whichever stops first (a crash, a failed start) ends the session; cleanup stops the other.
if [[ -n $poller_pid ]]; then
  wait -n "$watch_pid" "$poller_pid"
else
  wait "$watch_pid"
fi
