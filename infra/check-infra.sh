#!/usr/bin/env bash
# `make check-infra`: the template's offline checks, each timed. Nothing here needs AWS credentials or
# opens a connection.
#   infra/check-infra.sh [template.yaml]
#   1. cfn-lint                  0 errors and 0 warnings (its exit code is non-zero on either)
#   2. sam validate --lint       the SAM transform itself, then cfn-lint on the result
#   3. checkov                   0 failed checks, 0 parsing errors, and every skipped check carries a
#                                reason (Metadata: checkov: skip: [{id, comment}] on its resource)
#   4. dashboard JSON            the dashboard's body, rendered, parses (none of the above looks
#                                inside it: infra/check_dashboard.py)
# checkov exits 0 when it cannot parse the file (0 checks run), so its JSON summary is checked here.
#
# All three run twice: on the template as it deploys by default (the Amazon EventBridge ingress off),
# and on a copy whose only change is StripeEventSourceName's Default, set to a sample partner event
# source (ingress on; same line numbers, so findings point at the real file). None of the tools takes
# parameter values for all three (cfn-lint has --parameters; sam validate and checkov have nothing for
# CloudFormation), hence the copy. What each pass adds: cfn-lint checks the branches of every condition
# in both, but only the second resolves !Ref StripeEventSourceName to a value it checks against the
# parameter's AllowedPattern and the event bus's own name patterns; sam validate transforms the template
# with the defaults in force; checkov scans every resource whatever its Condition, so its results are
# the same in both. The passes run side by side and print when both are done.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TEMPLATE=${1:-template.yaml}
SAMPLE_EVENT_SOURCE=aws.partner/stripe.com/ed_test_61ABCDEF
export SAM_CLI_TELEMETRY=0 AWS_EC2_METADATA_DISABLED=true

for tool in cfn-lint sam checkov python3; do
  command -v "$tool" >/dev/null || { echo "check-infra: $tool not found; run make setup" >&2; exit 1; }
done

now() { date +%s.%N; }
took() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f} s')" "$1" "$(now)"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The ingress-on copy: exactly one `Default: ""` replaced, inside the StripeEventSourceName parameter.
python3 - "$TEMPLATE" "$work/ingress-on.yaml" "$SAMPLE_EVENT_SOURCE" <<'PY'
import re, sys

source, target, sample = sys.argv[1:]
text = open(source, encoding="utf-8").read()
block = re.search(r"^  StripeEventSourceName:\n((?:    .*\n)+)", text, re.M)
if block is None:
    sys.exit(f"check-infra: {source} declares no parameter StripeEventSourceName (the EventBridge ingress)")
body, count = re.subn(r'^    Default: ""$', f"    Default: {sample}", block.group(1), count=1, flags=re.M)
if count != 1:
    sys.exit(f'check-infra: StripeEventSourceName in {source} must default to "" (ingress off)')
with open(target, "w", encoding="utf-8") as fh:
    fh.write(text[: block.start(1)] + body + text[block.end(1) :])
PY

# check_template FILE NAME: the three checks on one file, stopping at the first that fails; checkov's
# skipped checks are written to $work/skips-NAME. Run it as a process of its own (errexit does not
# apply inside a function called as the operand of || or &&).
check_template() {
  local file=$1 name=$2 label="[${2//-/ }]" start report dashboard
  start=$(now)
  cfn-lint -- "$file"
  echo "$label cfn-lint: 0 errors, 0 warnings ($(took "$start"))"

  start=$(now)
  sam validate --lint --template "$file" >/dev/null
  echo "$label sam validate --lint: valid ($(took "$start"))"

  start=$(now)
  dashboard=$(python3 infra/check_dashboard.py "$file")
  echo "$label dashboard: JSON once rendered, $dashboard ($(took "$start"))"

  start=$(now)
  report="$work/checkov-$name.json"
  # --skip-download: no online lookups (without it checkov prints tracebacks when offline).
  checkov -f "$file" --framework cloudformation --skip-download --compact -o json >"$report" 2>/dev/null || true
  python3 - "$report" "$(took "$start")" "$label" "$work/skips-$name" <<'PY'
import json, sys

path, elapsed, label, skips_file = sys.argv[1:]
try:
    with open(path, encoding="utf-8") as fh:
        report = json.load(fh)
except ValueError:
    sys.exit(f"{label} checkov: no JSON report (run it by hand to see why)")
if isinstance(report, list):  # one entry per framework; we ask for one
    report = report[0]
summary, results = report["summary"], report["results"]
problems = []
if summary.get("parsing_errors"):
    problems.append(f"{summary['parsing_errors']} file(s) could not be parsed")
if summary.get("passed", 0) == 0:
    problems.append("no check passed: did checkov read the template at all?")
for check in results.get("failed_checks", []):
    problems.append(f"FAILED {check['check_id']} {check['check_name']}: {check['resource']} "
                    f"(lines {check['file_line_range'][0]}-{check['file_line_range'][1]})")
for check in results.get("skipped_checks", []):
    reason = (check.get("check_result") or {}).get("suppress_comment") or ""
    if len(reason.strip()) < 40:
        problems.append(f"SKIPPED without a real reason: {check['check_id']} on {check['resource']}")
if problems:
    print("\n".join(f"{label} checkov: {p}" for p in problems), file=sys.stderr)
    sys.exit(1)
print(f"{label} checkov: {summary['passed']} passed, 0 failed, {summary['skipped']} skipped with reasons ({elapsed})")
with open(skips_file, "w", encoding="utf-8") as fh:
    for check in sorted(results.get("skipped_checks", []), key=lambda c: (c["check_id"], c["resource"])):
        fh.write(f"  skip {check['check_id']:<12} {check['resource']}\n")
PY
}

overall=$(now)
check_template "$TEMPLATE" ingress-off >"$work/off.log" 2>&1 &
off_pid=$!
check_template "$work/ingress-on.yaml" ingress-on >"$work/on.log" 2>&1 &
on_pid=$!
off_status=0 on_status=0
wait "$off_pid" || off_status=$?
wait "$on_pid" || on_status=$?

cat "$work/off.log"
if [[ -f "$work/skips-ingress-off" ]]; then cat "$work/skips-ingress-off"; fi
cat "$work/on.log"
# The skip list once: the second pass's only where it differs (it should not, see above).
if [[ -f "$work/skips-ingress-on" ]] && ! cmp -s "$work/skips-ingress-off" "$work/skips-ingress-on"; then
  cat "$work/skips-ingress-on"
fi
if ((off_status || on_status)); then
  echo "check-infra: FAILED (ingress off: exit $off_status; ingress on: exit $on_status," \
    "StripeEventSourceName=$SAMPLE_EVENT_SOURCE)" >&2
  exit 1
fi
echo "check-infra: clean with the EventBridge ingress off and on ($(took "$overall") in all;" \
  "on = StripeEventSourceName=$SAMPLE_EVENT_SOURCE)"
