#!/usr/bin/env bash
# Installs LocalStack (no Docker) and tsprov's emulator extension into a venv.
# Idempotent: a second run only checks that the pinned versions are there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${TSPROV_LOCALSTACK_VENV:-$here/.venv}"

find_python() {
  # LocalStack 2026.3 needs Python >= 3.12; Debian's python3 is 3.11.
  local candidates=()
  if command -v pyenv >/dev/null 2>&1; then
    local root; root="$(pyenv root)"
    candidates+=("$root/versions/3.13.0/bin/python3" "$root/versions/3.12.1/bin/python3")
    for p in "$root"/versions/3.1[2-9]*/bin/python3; do candidates+=("$p"); done
  fi
  candidates+=(python3.13 python3.12 python3)
  for c in "${candidates[@]}"; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
      echo "$c"; return 0
    fi
  done
  echo "install.sh: no Python >= 3.12 found (tried: ${candidates[*]})" >&2
  return 1
}

if [ ! -x "$venv/bin/python" ]; then
  py="$(find_python)"
  echo "localstack: creating venv $venv with $py" >&2
  "$py" -m venv "$venv"
fi
stamp="$venv/.tsprov-installed"
want="localstack-core[runtime]==2026.3.0 cbor2==5.9.0 pyopenssl==26.0.0 ext=$(cat "$here/ext/pyproject.toml" "$here"/ext/tsprov_localstack_ext/*.py | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "localstack: installing into $venv (about 40 s)" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  'localstack-core[runtime]==2026.3.0' 'cbor2==5.9.0' 'pyopenssl==26.0.0'
# The extension registers eks/rds/elasticache providers (see ext/README.md).
# Built from a clean tree: setuptools' build/ and egg-info would otherwise go stale in ext/.
rm -rf "$here/ext/build" "$here"/ext/*.egg-info
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall "$here/ext"
rm -rf "$here/ext/build" "$here"/ext/*.egg-info
echo "$want" > "$stamp"
