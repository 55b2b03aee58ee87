#!/usr/bin/env bash
# Wall time and AWS API calls of apply, no-change plan and destroy of a plan file
# against LocalStack (started if needed), under a fresh stack name.
# Usage: scripts/bench.sh [PLAN]
set -euo pipefail
cd "$(dirname "$0")/.."
plan="${1:-plans/taskstream.toml}"
localstack/start.sh
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}" AWS_REGION="${AWS_REGION:-us-east-1}"
endpoint="${AWS_ENDPOINT_URL:-http://127.0.0.1:4566}"
cargo build --quiet
stack="bench-$(date +%s)"
# A throwaway stack: without deletion protection, so that destroy can finish.
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
sed 's/^protect_data = true/protect_data = false/' "$plan" > "$work/plan.toml"; plan="$work/plan.toml"
allow=(--allow-destroy kms_key.main --allow-destroy rds_cluster.main --allow-destroy s3_bucket.data_lake --allow-destroy s3_bucket.artifacts)
run() { ./target/debug/tsprov "$@" --endpoint-url "$endpoint" --stack "$stack"; }
timed() {
  local label="$1"; shift
  local start end out
  start=$(date +%s.%N)
  out=$("$@" 2>/dev/null)
  end=$(date +%s.%N)
  local calls
  calls=$(printf '%s\n' "$out" | grep -oE '([0-9]+) AWS API calls in all|AWS API calls: [0-9]+|"api_calls": [0-9]+' | grep -oE '[0-9]+' | head -n1 || true)
  printf '%-22s %8.2f s  %6s API calls\n' "$label" "$(awk -v a="$start" -v b="$end" 'BEGIN{print b-a}')" "${calls:-?}"
}
echo "plan: ${1:-plans/taskstream.toml}  stack: $stack  ($(grep -c '' "${1:-plans/taskstream.toml}") lines, $(./target/debug/tsprov validate "$plan" | grep -oE '[0-9]+ resources'))"
timed "plan (from empty)" run plan "$plan"
timed "apply (from empty)" run apply "$plan" --auto-approve
timed "plan (no change)" run plan "$plan"
timed "apply (no change)" run apply "$plan" --auto-approve
timed "destroy" run destroy "$plan" --auto-approve "${allow[@]}"
