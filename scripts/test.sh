#!/usr/bin/env bash
# The full check: lint, format, types, docs and the test suite. Works on a fresh clone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh

echo "==> ruff check";          ruff check oodscore tests benchmarks docs/hooks
echo "==> ruff format --check"; ruff format --check oodscore tests benchmarks docs/hooks
echo "==> mypy --strict";       mypy
echo "==> mkdocs build --strict"
NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
echo "==> pytest"
python -m pytest -n 2 -q "$@"
