#!/usr/bin/env bash
# The test command: set up .venv (if needed), then lint, type-check and run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh dev,ray
echo "== ruff check"; ruff check src tests benchmarks
echo "== ruff format --check"; ruff format --check src tests benchmarks
echo "== mypy --strict src"; mypy --strict src
echo "== pytest"; python -m pytest "$@"
