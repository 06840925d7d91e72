#!/usr/bin/env bash
# Sets up .venv if needed, then runs CameNN on the embedded sample: preprocessing with Beam, printing
# its summary. Everything it writes goes under outputs/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
cd "$root"
exec "$root/.venv/bin/camenn" preprocess --dataset "$root/data/sample" --output "$root/outputs/preprocessed" "$@"
