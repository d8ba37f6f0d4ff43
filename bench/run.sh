#!/usr/bin/env bash
# `make bench`: measures the pipeline against Stripe's own libraries, a Flask and an Express receiver,
# then writes BENCHMARKS.md. Everything runs in this one invocation, on this machine, so the ratios
# compare like with like.
#
# Stages (BENCH_STAGES, default all, in this order):
#   verify     criterion benches (shared/benches/signature.rs) + stripe-python + stripe-node timings
#   load       the receiver under load (Rust under cargo lambda watch, Flask/gunicorn, Express)
#   coldstart  init time of each function against a local Runtime API, next to a hello-world binary
#   cost       DynamoDB/SQS requests and sizes per event, priced per million events
#   size       release arm64 zips (cargo lambda build --release --arm64 --output-format zip), and what
#              the binaries are made of (sections, bytes by crate: bench/profile.py --sizes)
#   flood      receiver CPU per refused request (no, malformed or forged signature, over the size
#              limit, wrong method or path) beside an accepted one; refusals must call no DynamoDB/SQS
# Knobs: BENCH_LOAD_EVENTS (unique events per receiver, 3000), BENCH_CONCURRENCY (16),
# BENCH_OUTPUT (BENCHMARKS.md), BENCH_SPLICE=1 (render only the stages run, into the existing
# BENCH_OUTPUT, leaving its other sections as they were: BENCH_STAGES=flood BENCH_SPLICE=1 make bench).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${STRIPE_PIPELINE_CACHE:-$HOME/.cache/stripe-webhook-pipeline}
VENV=${STRIPE_PIPELINE_VENV:-$CACHE/venv}
STAGES=${BENCH_STAGES:-verify load coldstart cost size flood}
OUTPUT=${BENCH_OUTPUT:-$ROOT/BENCHMARKS.md}
cd "$ROOT"

say() { printf 'bench: %s\n' "$*" >&2; }
has_stage() { [[ " $STAGES " == *" $1 "* ]]; }

bash infra/setup.sh
export PATH=$VENV/bin:$PATH
export SAM_CLI_TELEMETRY=0 AWS_EC2_METADATA_DISABLED=true

TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
RESULTS=$TARGET/bench
rm -rf "$RESULTS"
mkdir -p "$RESULTS"

# The comparison's own tools: pinned, installed once.
python3 -m pip install --quiet --disable-pip-version-check -r bench/python/requirements.txt
if [[ ! -d bench/node/node_modules ]] || [[ bench/node/package-lock.json -nt bench/node/node_modules ]]; then
  (cd bench/node && npm ci --no-audit --no-fund --loglevel=error)
fi

python3 - >"$RESULTS/machine.json" <<'PY'
import json, os, platform, subprocess, datetime
def out(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        return "unknown"
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
flags = next((l for l in open("/proc/cpuinfo") if l.startswith("flags")), "")
print(json.dumps({
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "commit": out("git", "rev-parse", "--short", "HEAD") + (" (with uncommitted changes)" if out("git", "status", "--porcelain", "--untracked-files=no") else ""),
    "cpu": f"{cpu}, {os.cpu_count()} cores" + (", SHA-NI" if " sha_ni" in flags else ""),
    "memory": f"{mem / 1024 / 1024:.0f} GiB",
    "os": f"{platform.system()} {platform.release()} ({out('sh', '-c', '. /etc/os-release && echo $PRETTY_NAME')})",
    "rust": out("rustc", "--version"),
    "cargo-lambda": out("cargo", "lambda", "--version"),
    "python": platform.python_version(),
    "node": out("node", "--version"),
}, indent=2))
PY

if has_stage verify; then
  say "verify: criterion (shared/benches/signature.rs)"
  BENCH_PAYLOAD_DIR=$RESULTS/payloads cargo bench -p stripe-pipeline --bench signature -- --noplot
  cp -r "$TARGET/criterion" "$RESULTS/criterion"
  say "verify: stripe-python"
  python3 bench/python/verify.py "$RESULTS/payloads" >"$RESULTS/verify-python.json"
  say "verify: stripe-node"
  node bench/node/verify.js "$RESULTS/payloads" >"$RESULTS/verify-node.json"
fi

if has_stage load || has_stage coldstart || has_stage cost || has_stage flood; then
  say "building the functions and the bench driver (release)"
  # With their symbol table (the same code; only the zips of stage `size` must be stripped), so the
  # profiles of stages load and coldstart can name functions; load.sh's watch builds the same way.
  export CARGO_PROFILE_RELEASE_STRIP=false
  cargo build --release -p receiver -p processor -p bench-driver -p bench-hello
fi

if has_stage load; then
  bash infra/emulators.sh start
  eval "$(bash infra/emulators.sh env)"
  bash bench/load.sh "$RESULTS"
fi

if has_stage coldstart; then
  say "coldstart: each binary against a local Runtime API"
  eval "$(bash infra/emulators.sh env)"
  # What init spends, by component: a system-wide perf record over the spawns (as in the load stage).
  perf_pid=
  if [[ ${BENCH_PROFILE:-1} == 1 ]] && command -v perf >/dev/null; then
    perf record -F 4999 -a -o "$RESULTS/perf-coldstart.data" >"$RESULTS/perf-coldstart.log" 2>&1 &
    perf_pid=$!
  fi
  # The environment each function needs to pass its init (nothing is called: no Secrets Manager).
  "$TARGET/release/bench-driver" coldstart --runs 30 \
    --binary receiver="$TARGET/release/receiver" \
    --binary processor="$TARGET/release/processor" \
    --binary hello="$TARGET/release/bench-hello" \
    --env STRIPE_WEBHOOK_SECRET=whsec_bench_coldstart --env DEDUP_TABLE_NAME=bench-DedupTable \
    --env EVENT_QUEUE_URL=http://127.0.0.1:5050/123456789012/bench-EventQueue \
    --env BILLING_TABLE_NAME=bench-BillingTable --env RUST_LOG=info \
    --json "$RESULTS/coldstart.json"
  if [[ -n $perf_pid ]]; then
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    perf script -i "$RESULTS/perf-coldstart.data" -F pid,tid,ip,sym,dso 2>>"$RESULTS/perf-coldstart.log" |
      python3 bench/profile.py receiver processor bench-hello >"$RESULTS/profile-coldstart.json" || true
    rm -f "$RESULTS/perf-coldstart.data"
  fi
fi

if has_stage cost; then
  bash infra/emulators.sh start
  eval "$(bash infra/emulators.sh env)"
  say "cost: requests and item sizes per event, through a counting proxy"
  # stdout is what the functions log (JSON lines and EMF metrics): its size per event is priced too.
  "$TARGET/release/bench-driver" cost --results "$RESULTS" --customers 100 >"$RESULTS/cost-logs.txt"
fi

if has_stage size; then
  say "size: cargo lambda build --release --arm64 --output-format zip"
  unset CARGO_PROFILE_RELEASE_STRIP
  if cargo lambda build --release --arm64 --output-format zip \
    --bin receiver --bin processor --bin bench-hello >"$RESULTS/size-build.log" 2>&1; then
    python3 - "$TARGET/lambda" >"$RESULTS/sizes.json" <<'PY'
import json, sys, zipfile
from pathlib import Path
sizes = {}
for name in ("receiver", "processor", "bench-hello"):
    z = Path(sys.argv[1]) / name / "bootstrap.zip"
    if z.exists():
        sizes[name] = {"zip": z.stat().st_size, "unzipped": sum(i.file_size for i in zipfile.ZipFile(z).infolist())}
print(json.dumps({"arch": "arm64", "sizes": sizes}))
PY
    # The same build keeping its symbol table, for what the binaries are made of (sections, bytes by
    # crate: bench/profile.py --sizes). Only the final links are redone.
    if CARGO_PROFILE_RELEASE_STRIP=false cargo lambda build --release --arm64 --lambda-dir "$RESULTS/unstripped" \
      --bin receiver --bin processor >>"$RESULTS/size-build.log" 2>&1; then
      python3 bench/profile.py --sizes receiver="$RESULTS/unstripped/receiver/bootstrap" \
        processor="$RESULTS/unstripped/processor/bootstrap" >"$RESULTS/size-profile.json"
      rm -rf "$RESULTS/unstripped"
    fi
  else
    say "size: arm64 build failed (see $RESULTS/size-build.log)"
  fi
fi

if has_stage flood; then
  bash infra/emulators.sh start
  eval "$(bash infra/emulators.sh env)"
  say "flood: receiver CPU per refused request beside an accepted one"
  # stdout is what the receiver logs: one JSON line and one EMF line per request.
  "$TARGET/release/bench-driver" flood --results "$RESULTS" >"$RESULTS/flood-logs.txt"
fi

if [[ -n ${BENCH_SPLICE:-} ]]; then
  # shellcheck disable=SC2086 # one argument per stage
  python3 bench/report.py "$RESULTS" "$OUTPUT" --only $STAGES
else
  python3 bench/report.py "$RESULTS" "$OUTPUT"
fi
say "wrote $OUTPUT"
