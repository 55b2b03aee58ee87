#!/usr/bin/env bash
# The main job on a fresh machine: LocalStack started, the reference plan validated,
# planned and applied in its three regions, then planned again (no changes).
set -euo pipefail
cd "$(dirname "$0")/.."
localstack/start.sh
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}" AWS_REGION="${AWS_REGION:-us-east-1}"
endpoint="${AWS_ENDPOINT_URL:-http://127.0.0.1:4566}"
cargo build --quiet
tsprov() { ./target/debug/tsprov "$@"; }
tsprov validate plans/taskstream.toml
tsprov plan plans/taskstream.toml --endpoint-url "$endpoint"
tsprov apply plans/taskstream.toml --endpoint-url "$endpoint" --auto-approve
tsprov plan plans/taskstream.toml --endpoint-url "$endpoint" --detailed-exitcode
echo "Done. To remove it: set protect_data = false in the plan and apply (deletion protection),"
echo "then: ./target/debug/tsprov destroy --endpoint-url $endpoint --auto-approve \\"
echo "  --allow-destroy kms_key.main --allow-destroy rds_cluster.main --allow-destroy s3_bucket.data_lake --allow-destroy s3_bucket.artifacts"
