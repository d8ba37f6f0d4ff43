#!/usr/bin/env bash
# `make test`: the whole workspace's tests against the local emulators.
#   infra/test.sh [cargo test arguments...]
# Installs the tools if needed, starts the emulators unless they already answer (and leaves them
# running for the next run; `make emulators-stop` stops them), points the AWS SDKs at them, and
# puts the tools venv first on PATH so the tests' `python3 infra/resources.py ...` finds boto3.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${STRIPE_PIPELINE_CACHE:-$HOME/.cache/stripe-webhook-pipeline}
VENV=${STRIPE_PIPELINE_VENV:-$CACHE/venv}
export STRIPE_PIPELINE_CACHE=$CACHE STRIPE_PIPELINE_VENV=$VENV
cd "$ROOT"

bash infra/setup.sh
bash infra/emulators.sh start
eval "$(bash infra/emulators.sh env)"
export PATH=$VENV/bin:$PATH

cargo test --workspace "$@"
