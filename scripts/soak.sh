#!/usr/bin/env bash
# The long runs behind the CI-sized tests of tests/faults.rs and tests/crash.rs:
#   scripts/soak.sh [FAULT_SEEDS] [CRASH_RUNS] [CRASH_TRIALS]   (default: 10 3 40)
# - the whole platform applied and destroyed with a fifth of all calls faulted, once
#   per seed 1..FAULT_SEEDS;
# - CRASH_RUNS runs of CRASH_TRIALS SIGKILLs at random moments of apply and destroy.
set -euo pipefail
cd "$(dirname "$0")/.."
fault_seeds=${1:-10} crash_runs=${2:-3} crash_trials=${3:-40}
localstack/start.sh
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
cargo build --tests -q
failed=0
for seed in $(seq 1 "$fault_seeds"); do
  log=$(mktemp)
  if TSPROV_FAULT_SEED="$seed" cargo test -q --test faults the_platform_converges -- --nocapture >"$log" 2>&1; then
    grep "^seed" "$log" || true
  else
    failed=$((failed + 1)); echo "fault seed $seed FAILED (log: $log)"; grep -E "^seed|panicked" "$log" || true
  fi
done
for run in $(seq 1 "$crash_runs"); do
  log=$(mktemp)
  if TSPROV_CRASH_TRIALS="$crash_trials" cargo test -q --test crash -- --nocapture >"$log" 2>&1; then
    echo "crash run $run: $(grep -c "killed after" "$log") SIGKILLs in $(grep -c "^trial" "$log") runs; converged ($(grep "^crash seed" "$log"))"
  else
    failed=$((failed + 1)); echo "crash run $run FAILED (log: $log)"; grep -E "^crash seed|panicked" "$log" || true
  fi
done
echo "soak: $failed failure(s)"
[ "$failed" = 0 ]
