#!/usr/bin/env bash
# `make check-infra`: the template's offline checks, each timed. Nothing here needs AWS credentials or
# opens a connection.
#   infra/check-infra.sh [template.yaml]
#   1. cfn-lint                  0 errors and 0 warnings (its exit code is non-zero on either)
#   2. sam validate --lint       the SAM transform itself, then cfn-lint on the result
#   3. checkov                   0 failed checks, 0 parsing errors, and every skipped check carries a
#                                reason (Metadata: checkov: skip: [{id, comment}] on its resource)
# checkov exits 0 when it cannot parse the file (0 checks run), so its JSON summary is checked here.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TEMPLATE=${1:-template.yaml}
export SAM_CLI_TELEMETRY=0 AWS_EC2_METADATA_DISABLED=true

for tool in cfn-lint sam checkov python3; do
  command -v "$tool" >/dev/null || { echo "check-infra: $tool not found; run make setup" >&2; exit 1; }
done

now() { date +%s.%N; }
took() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f} s')" "$1" "$(now)"; }

start=$(now)
cfn-lint -- "$TEMPLATE"
echo "cfn-lint: 0 errors, 0 warnings ($(took "$start"))"

start=$(now)
sam validate --lint --template "$TEMPLATE" >/dev/null
echo "sam validate --lint: valid ($(took "$start"))"

start=$(now)
report=$(mktemp)
trap 'rm -f "$report"' EXIT
# --skip-download: no online lookups (without it checkov prints tracebacks when offline).
checkov -f "$TEMPLATE" --framework cloudformation --skip-download --compact -o json >"$report" 2>/dev/null || true
python3 - "$report" "$(took "$start")" <<'EOF'
import json, sys

path, elapsed = sys.argv[1], sys.argv[2]
try:
    with open(path, encoding="utf-8") as fh:
        report = json.load(fh)
except ValueError:
    sys.exit("checkov: no JSON report (run it by hand to see why)")
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
    print("\n".join(f"checkov: {p}" for p in problems), file=sys.stderr)
    sys.exit(1)
print(f"checkov: {summary['passed']} passed, 0 failed, {summary['skipped']} skipped with reasons ({elapsed})")
for check in sorted(results.get("skipped_checks", []), key=lambda c: (c["check_id"], c["resource"])):
    print(f"  skip {check['check_id']:<12} {check['resource']}")
EOF
