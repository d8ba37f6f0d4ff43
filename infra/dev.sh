#!/usr/bin/env bash
# `make dev`: both functions under `cargo lambda watch` (rebuilt on every change), talking to the
# local emulators through tables and queues made from template.yaml with the prefix "dev".
#
# Env knobs: DEV_PORT (9000), DEV_PREFIX (dev), STRIPE_WEBHOOK_SECRET (comma-separated whsec_
# secrets; default: one generated once and kept in .local/webhook-secret).
# Ctrl-C stops cargo lambda watch, and the emulators too if this script started them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${STRIPE_PIPELINE_CACHE:-$HOME/.cache/stripe-webhook-pipeline}
VENV=${STRIPE_PIPELINE_VENV:-$CACHE/venv}
export STRIPE_PIPELINE_CACHE=$CACHE STRIPE_PIPELINE_VENV=$VENV
DEV_PORT=${DEV_PORT:-9000}
DEV_PREFIX=${DEV_PREFIX:-dev}
STATE=$ROOT/.local
cd "$ROOT"

say() { printf 'dev: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

bash infra/setup.sh
export PATH=$VENV/bin:$PATH

# Fail now rather than after the emulators start: a second `make dev` still running, say.
if (exec 3<>"/dev/tcp/127.0.0.1/$DEV_PORT") 2>/dev/null; then
  die "port $DEV_PORT is already in use (another \`make dev\`?); stop it or set DEV_PORT"
fi

started_emulators=false
bash infra/emulators.sh status >/dev/null 2>&1 || started_emulators=true
watch_pid=
cleanup() {
  trap - EXIT INT TERM
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
  for var in AWS_ENDPOINT_URL_DYNAMODB AWS_ENDPOINT_URL_SQS AWS_ENDPOINT_URL_SECRETS_MANAGER \
    AWS_REGION AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_EC2_METADATA_DISABLED; do
    echo "$var='${!var}'"
  done
  echo "RUST_LOG='${RUST_LOG:-info}'"
} >"$env_file"
chmod 600 "$env_file"

url="http://127.0.0.1:$DEV_PORT/lambda-url/receiver/webhooks/stripe"
cat >&2 <<EOF

  Webhook URL:        $url
  Local secret:       $local_secret
  Secrets in use:     $STRIPE_WEBHOOK_SECRET
  Tables and queues:  prefix "$DEV_PREFIX" (env in .local/dev.env)

  To forward real test-mode events from Stripe:
    stripe listen --forward-to $url
  \`stripe listen\` prints its own whsec_ secret; restart with both accepted (comma-separated):
    STRIPE_WEBHOOK_SECRET=$local_secret,<listen secret> make dev

  The processor is not fed from SQS locally; invoke it with an SQS event:
    cargo lambda invoke processor --invoke-port $DEV_PORT --data-file <sqs-event.json>

EOF

# Long options on purpose: in cargo-lambda 1.9 `-p` is --package and `-a` does not exist
# (the short forms are -A/-P).
setsid cargo lambda watch --invoke-address 127.0.0.1 --invoke-port "$DEV_PORT" --env-file "$env_file" &
watch_pid=$!
wait "$watch_pid"
