#!/usr/bin/env bash
# Runs the Python client's tests against the real pipeline (`eye dev` with its own PostgreSQL).
#
#   clients/python/run-tests.sh [pytest args...]
#
# EYE_BIN: the eye binary (default <repo root>/target/debug/eye; eye-ingest and eye-validator
#          are expected next to it). EYE_PY_VENV: the venv to (re)use (default /tmp/eye-py-venv).
# The package is installed into the venv as a user would (pip install ./clients/python), not
# imported from the source tree. Exits non-zero on any failure.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${EYE_PY_VENV:-/tmp/eye-py-venv}"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  "pytest>=8" "grpcio-tools==1.76.0" \
  "pyarrow>=18" "duckdb>=2,<3" "moto[server]>=5" "boto3>=1.35"
# --force-reinstall --no-deps: always the current source, even at an unchanged version.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$here"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  --force-reinstall --no-deps "$here"

cd "$here"
# moto_server (test_export.py) is a script of the venv.
export PATH="$venv/bin:$PATH"
# The pytest script, not `python -m pytest`: the latter would put the source tree on sys.path.
exec "$venv/bin/pytest" "$@"
