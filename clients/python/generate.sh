#!/usr/bin/env bash
# Regenerates eye_client/_proto from ../../proto with the pinned grpcio-tools.
# Uses $PYTHON if set, else the test venv of run-tests.sh if it exists, else python3.
# Pass --check to compare without writing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${EYE_PY_VENV:-/tmp/eye-py-venv}"
if [[ -n "${PYTHON:-}" ]]; then
  python="$PYTHON"
elif [[ -x "$venv/bin/python" ]]; then
  python="$venv/bin/python"
else
  python=python3
fi
exec "$python" "$here/generate.py" "$@"
