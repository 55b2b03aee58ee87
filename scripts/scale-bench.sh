#!/usr/bin/env bash
# Scale benchmark: stacks of 1x, 5x and 20x the reference platform (more subnets,
# security groups, buckets and node groups per region) against LocalStack. For each:
# AWS calls and wall time of a no-change plan, apply time from empty, peak memory.
# Usage: scripts/scale-bench.sh [FACTORS...]   (default: 1 5 20)
set -euo pipefail
cd "$(dirname "$0")/.."
factors=("${@:-1 5 20}"); [ $# -eq 0 ] && factors=(1 5 20)
localstack/start.sh
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}" AWS_REGION="${AWS_REGION:-us-east-1}"
endpoint="${AWS_ENDPOINT_URL:-http://127.0.0.1:4566}"
cargo build --quiet
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
allow=(--allow-destroy kms_key.main --allow-destroy rds_cluster.main --allow-destroy s3_bucket.data_lake --allow-destroy s3_bucket.artifacts)

generate() { # factor -> plan file with (factor - 1) extra copies' worth of resources per region
  python3 - "$1" > "$work/x$1.toml" <<'PY'
import sys
factor = int(sys.argv[1])
plan = open("plans/taskstream.toml").read().replace("protect_data = true", "protect_data = false")
out = [plan]
for k in range(1, factor):
    for j in range(3):   # 3 per-AZ subnet blocks = 9 subnets, /26 each
        out.append(f'[subnet.x{k}_{j}]\nper_az = true\nvpc = "vpc.main"\ncidr_block = {{ within = "vpc.main", newbits = 10, netnum = {420 + 9 * k + 3 * j} }}\n')
    for j in range(10):  # 10 security groups with a rule each = 20 resources
        out.append(f'[security_group.x{k}_{j}]\nvpc = "vpc.main"\ningress = [{{ port = {8000 + j}, security_group = "security_group.eks_nodes" }}]\negress = []\n')
    for j in range(10):  # 10 buckets
        out.append(f'[s3_bucket.x{k}-{j}]\nkms_key = "kms_key.main"\n')
    for j in range(9):   # 9 node groups
        out.append(f'[eks_node_group.x{k}_{j}]\ncluster = "eks_cluster.main"\nrole = "iam_role.eks_nodes"\nsubnets = ["subnet.private"]\ninstance_types = ["m6i.large"]\nmin_size = 1\ndesired_size = 1\nmax_size = 2\n')
print("\n".join(out))
PY
}

# Reads AWS has no batch call for (one per resource): everything else is one paginated call per kind and region.
per_resource='EC2:DescribeVpcAttribute KMS:DescribeKey KMS:GetKeyRotationStatus KMS:ListResourceTags IAM:ListRoleTags IAM:ListAttachedRolePolicies IAM:GetRolePolicy EKS:DescribeCluster EKS:DescribeNodegroup EKS:ListNodegroups S3:GetBucketTagging S3:GetBucketEncryption S3:GetBucketVersioning S3:GetPublicAccessBlock CloudWatch Logs:ListTagsForResource RDS:ListTagsForResource ElastiCache:ListTagsForResource'
# CPU seconds LocalStack has used so far (it serves every call: its CPU bounds the wall time).
ls_pid=$(cat localstack/.state/localstack.pid 2>/dev/null || echo "")
ls_cpu() { [ -n "$ls_pid" ] && awk -v t="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / t}' "/proc/$ls_pid/stat" || echo 0; }
printf '%-6s %10s %11s %9s %13s %9s %10s %12s %12s %12s %12s\n' factor resources "plan calls" batched per-resource "plan s" "apply s" "plan RSS MB" "apply RSS MB" "plan CPU s" "emulator CPU s"
for f in "${factors[@]}"; do
  generate "$f"
  plan="$work/x$f.toml"; stack="scale$f-$(date +%s)"
  resources=$(./target/debug/tsprov validate "$plan" | grep -oE '[0-9]+ resources' | grep -oE '[0-9]+')
  run() { /usr/bin/time -f '%e %M %U %S' -o "$work/time" ./target/debug/tsprov "$@" --endpoint-url "$endpoint" --stack "$stack" > "$work/out" 2>/dev/null || true; }
  run apply "$plan" --auto-approve
  read -r apply_s apply_kb _ _ < "$work/time"
  ls_before=$(ls_cpu)
  run plan "$plan" --json --detailed-exitcode
  ls_after=$(ls_cpu)
  read -r plan_s plan_kb plan_user plan_sys < "$work/time"
  read -r calls batched single < <(PER_RESOURCE="$per_resource" python3 -c '
import json, os, sys
d = json.load(open(sys.argv[1])); s = d["summary"]
assert s["add"] + s["change"] + s["replace"] + s["destroy"] == 0, s
per = set(os.environ["PER_RESOURCE"].replace("CloudWatch Logs", "CloudWatch_Logs").split())
ops = {k.replace("CloudWatch Logs", "CloudWatch_Logs"): v for k, v in d["api_calls_by_operation"].items()}
single = sum(v for k, v in ops.items() if k in per)
print(d["api_calls"], d["api_calls"] - single, single)' "$work/out")
  printf '%-6s %10s %11s %9s %13s %9s %10s %12s %12s %12s %12s\n' "${f}x" "$resources" "$calls" "$batched" "$single" "$plan_s" "$apply_s" "$((plan_kb / 1024))" "$((apply_kb / 1024))" \
    "$(awk -v u="$plan_user" -v s="$plan_sys" 'BEGIN{printf "%.1f", u+s}')" "$(awk -v a="$ls_before" -v b="$ls_after" 'BEGIN{printf "%.1f", b-a}')"
  ./target/debug/tsprov destroy "$plan" --auto-approve "${allow[@]}" $(grep -oE '^\[s3_bucket\.[a-z0-9_-]+' "$plan" | sed 's/^\[/--allow-destroy /') --endpoint-url "$endpoint" --stack "$stack" > /dev/null 2>&1 || echo "destroy of $stack failed" >&2
done
