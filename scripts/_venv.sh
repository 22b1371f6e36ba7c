# Sourced by the project's scripts: create or reuse .venv and install sincere into it.
# Reinstalls only when pyproject.toml changed (a stamp file keeps its hash), then compiles the
# simulator's hot modules when they are missing or older than their sources (sincere native;
# identical results, ~1.7x faster). SINCERE_NATIVE=0 skips that and runs interpreted.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SINCERE_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
EXTRAS="${1:-}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[sincere] creating virtual environment in $VENV" >&2
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
fi
STAMP="$VENV/.sincere-install-${EXTRAS:-core}"
HASH="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$HASH" ]; then
  echo "[sincere] installing sincere${EXTRAS:+[$EXTRAS]} (first run takes a minute or two)" >&2
  TARGET="$ROOT"
  [ -n "$EXTRAS" ] && TARGET="$ROOT[$EXTRAS]"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$TARGET" >&2
  echo "$HASH" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
if [ "${SINCERE_NATIVE:-1}" != "0" ]; then
  "$VENV/bin/sincere" native build --if-stale >/dev/null \
    || echo "[sincere] compiled modules unavailable; running the interpreted sources" >&2
fi
