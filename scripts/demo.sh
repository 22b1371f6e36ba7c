#!/usr/bin/env bash
# The main job on its built-in default: SINCERE's study in simulation (strategies x traffic x
# CC / non-CC on one H100), reduced to run in seconds, ending with where the report is.
# Pass --full for the whole study (810 cells, a couple of minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh native
OUT="${SINCERE_OUT:-runs/sincere-study}"
if [ "${1:-}" = "--full" ]; then
  sincere experiment sincere-study --out "$OUT-full"
else
  sincere experiment sincere-study --quick --out "$OUT"
fi
