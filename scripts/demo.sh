#!/usr/bin/env bash
# Set up the environment (scripts/setup_env.sh) and run the demo on the embedded synthetic room.
# The demo writes ./kd3d_demo in the directory you run this from (about 270 MB; --out DIR to choose, --overwrite
# to replace an earlier demo). Extra arguments go to `kd3d demo`.
set -euo pipefail
HERE=$PWD
ROOT=$(cd "$(dirname "$0")/.." && pwd)
(cd "$ROOT" && ./scripts/setup_env.sh)
VENV=${KD3D_VENV:-.venv}
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
cd "$HERE"
exec "$VENV/bin/kd3d" demo "$@"
