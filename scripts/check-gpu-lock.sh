#!/usr/bin/env bash
# Checks, on any machine (no GPU needed), that requirements/gpu.lock resolves as one consistent set
# for linux x86_64 / CPython 3.11 — what the GPU node image (cluster/Dockerfile) installs. Resolves
# against the package index without installing or downloading wheels (uv reads their metadata).
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-.venv-tools/bin/uv}
command -v "$UV" >/dev/null 2>&1 || UV=uv
"$UV" pip install --dry-run --python-platform x86_64-manylinux_2_28 --python-version 3.11 \
  --target "$(mktemp -d)" -r requirements/gpu.lock
