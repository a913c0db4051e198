#!/usr/bin/env bash
# Set up the environment (scripts/setup_env.sh) and run the whole test suite. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/setup_env.sh || exit 1
VENV=${KD3D_VENV:-.venv}
"$VENV/bin/python" -m pytest -q "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: treating as failure" >&2
  exit 1
fi
exit "$rc"
