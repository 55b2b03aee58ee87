#!/usr/bin/env bash
# Stops the LocalStack started by start.sh. SIGTERM can hang: wait 2 s, then SIGKILL.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
state="${TSPROV_LOCALSTACK_STATE:-$here/.state}"
pidfile="$state/localstack.pid"
[ -f "$pidfile" ] || { echo "localstack: not running (no $pidfile)" >&2; exit 0; }
pid="$(cat "$pidfile")"
if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid" 2>/dev/null
  for _ in 1 2 3 4; do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
fi
rm -f "$pidfile"
echo "localstack: stopped" >&2
