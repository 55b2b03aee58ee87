#!/usr/bin/env bash
# The test command: installs and starts LocalStack (no Docker) if needed, then runs
# the emulator extension's test and the whole cargo test suite against it.
set -euo pipefail
cd "$(dirname "$0")/.."
started=0
if ! curl -fsS --max-time 2 http://127.0.0.1:4566/_localstack/health >/dev/null 2>&1; then
  localstack/start.sh
  started=1
fi
cleanup() { if [ "$started" = 1 ]; then localstack/stop.sh; fi; }
trap cleanup EXIT
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
export TSPROV_TEST_ENDPOINT=http://127.0.0.1:4566
echo "== emulator extension (EKS, RDS, ElastiCache)"
localstack/.venv/bin/python localstack/test_extension.py
echo "== cargo test"
cargo test --all-targets "$@"
