#!/usr/bin/env bash
# Create (or update) the project's virtual environment at .venv with hpctune and the exact versions its
# tests run with (constraints.txt; pyproject.toml itself only sets lower bounds).
# Usage: source scripts/setup-env.sh [extra]   e.g. "test" installs the test tools too.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extra="${1:-}"
constraints="$repo/constraints.txt"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "hpctune needs Python >= 3.10 (found $("$python" --version)); set PYTHON=/path/to/python3.x" >&2
  exit 2
fi
if [ ! -x "$repo/.venv/bin/python" ]; then
  echo "setup: creating $repo/.venv"
  "$python" -m venv "$repo/.venv"
fi
stamp="$repo/.venv/.hpctune-installed${extra:+-$extra}"
if [ ! -f "$stamp" ] || [ "$repo/pyproject.toml" -nt "$stamp" ] || [ "$constraints" -nt "$stamp" ]; then
  echo "setup: installing hpctune${extra:+[$extra]} and its dependencies (a few minutes the first time)"
  "$repo/.venv/bin/python" -m pip install --quiet -c "$constraints" -e "$repo${extra:+[$extra]}" 2>&1 \
    | grep -v "^WARNING: Location" || true
  "$repo/.venv/bin/python" -c "import hpctune.cli, ultralytics, ray.tune, submitit" || { echo "setup: install failed" >&2; exit 1; }
  touch "$stamp"
fi
