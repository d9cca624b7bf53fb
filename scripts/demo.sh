#!/usr/bin/env bash
# The main job on a fresh machine: set up the environment, then run a real ASHA search on the built-in
# synthetic dataset (CPU, a few minutes). Extra arguments go to `hpctune demo`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup-env.sh"
exec "$repo/.venv/bin/hpctune" demo "$@"
