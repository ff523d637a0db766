#!/usr/bin/env bash
# Create .venv and install uebench with its test extra. torch is pinned here (CI and the
# quick start); pyproject.toml states ranges so users can bring their own CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q -e ".[test]"
echo "uebench installed in $(pwd)/.venv" >&2
