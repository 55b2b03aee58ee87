#!/usr/bin/env bash
# Concurrency with 200 ms added to every AWS call (examples/concurrency_bench.rs):
# apply of 1 region vs 3 regions, and per region the sum of step times vs the
# critical path of the dependency graph. Usage: LATENCY_MS=200 scripts/concurrency-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
localstack/start.sh
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}" AWS_REGION="${AWS_REGION:-us-east-1}"
cargo build --quiet --bin tsprov
cargo run --quiet --example concurrency_bench
