#!/usr/bin/env bash
# The long fault run: the convergence test of tests/faults.rs (a fifth of all calls
# faulted, the whole platform in three regions) once per seed. CI runs one seed.
#   scripts/fault-soak.sh [SEEDS...]     (default: seeds 1 to 10)
set -euo pipefail
cd "$(dirname "$0")/.."
localstack/start.sh
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=($(seq 1 10))
cargo build --tests -q
passed=0
for seed in "${seeds[@]}"; do
  log=$(mktemp)
  if TSPROV_FAULT_SEED="$seed" cargo test -q --test faults the_platform_converges -- --nocapture >"$log" 2>&1; then
    passed=$((passed + 1)); grep "^seed" "$log" || true
  else
    echo "seed $seed FAILED (log: $log)"; grep -E "^seed|panicked" "$log" || true
  fi
done
echo "fault soak: $passed of ${#seeds[@]} seeds converged in one apply"
[ "$passed" = "${#seeds[@]}" ]
