#!/usr/bin/env bash
# The library's main job on a fresh clone: set up .venv, then run `oodscore demo`
# (trains small classifiers on the embedded digits and prints an OOD report). Extra
# arguments go to `oodscore demo` (e.g. --seed 1 --plot demo.png).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
oodscore demo "$@"
