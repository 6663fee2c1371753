#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv with the pinned
# dependencies of requirements/dev.txt and oodscore installed editable.
# Sourced by scripts/test.sh and scripts/demo.sh; safe to run again.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-python3}"
stamp="$venv/.oodscore-env"
want="$(cat "$root/requirements/dev.txt" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "==> creating $venv"
    "$python" -m venv "$venv"
fi
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    echo "==> installing pinned dependencies"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$root/requirements/dev.txt"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e "$root"
    echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
