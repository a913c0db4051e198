#!/usr/bin/env bash
# Set up the environment (scripts/setup_env.sh) and run the demo on the embedded synthetic room.
# Extra arguments go to `kd3d demo` (e.g. --out DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup_env.sh
VENV=${KD3D_VENV:-.venv}
exec "$VENV/bin/kd3d" demo "$@"
