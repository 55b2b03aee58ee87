#!/usr/bin/env bash
# Starts LocalStack on 127.0.0.1:4566 (installing it first if needed) and waits until it is healthy.
# Idempotent: returns at once when a healthy LocalStack already listens there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${TSPROV_LOCALSTACK_VENV:-$here/.venv}"
state="${TSPROV_LOCALSTACK_STATE:-$here/.state}"
url="http://127.0.0.1:4566/_localstack/health"

healthy() { curl -fsS --max-time 2 "$url" >/dev/null 2>&1; }

if healthy; then echo "localstack: already running on 127.0.0.1:4566" >&2; exit 0; fi
"$here/install.sh"
mkdir -p "$state/volume"
# S3 data lands here whatever the settings; start from a clean store.
rm -rf /tmp/localstack-s3-storage
# plux caches entry points (our providers and mends) keyed by file mtimes, which a
# reinstall of the extension may leave unchanged: keep its cache here, new each start.
rm -rf "$state/cache"
(
  cd "$state"
  OVERRIDE_IN_DOCKER=0 GATEWAY_SERVER=hypercorn GATEWAY_LISTEN=127.0.0.1:4566 \
  DNS_ADDRESS=0 SKIP_SSL_CERT_DOWNLOAD=1 DISABLE_EVENTS=1 PERSISTENCE=0 \
  LOCALSTACK_VOLUME_DIR="$state/volume" EAGER_SERVICE_LOADING=0 XDG_CACHE_HOME="$state/cache" \
  nohup "$venv/bin/python" -m localstack.runtime.main >"$state/localstack.log" 2>&1 &
  echo $! >"$state/localstack.pid"
)
for _ in $(seq 1 120); do
  if healthy; then echo "localstack: ready on 127.0.0.1:4566 (log: $state/localstack.log)" >&2; exit 0; fi
  if ! kill -0 "$(cat "$state/localstack.pid")" 2>/dev/null; then
    echo "localstack: process exited during start-up; last lines of $state/localstack.log:" >&2
    tail -n 30 "$state/localstack.log" >&2
    exit 1
  fi
  sleep 0.5
done
echo "localstack: not healthy after 60 s; see $state/localstack.log" >&2
exit 1
