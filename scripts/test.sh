#!/usr/bin/env bash
# The whole test suite on a fresh machine: set up the environment, start the local Slurm cluster
# (as root; skipped with a notice otherwise), run pytest, tear the cluster down. Extra arguments go to pytest.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The Slurm test nodes, like real compute nodes, have a private /tmp: a checkout there (and the
# venv and test folders inside it) would be invisible to them. Run from a copy on shared storage.
case "$repo" in
  /tmp/*|/dev/shm/*)
    shared_copy="${HPCTUNE_SHARED_CHECKOUT:-/var/lib/hpctune-checkout}"
    echo "test: $repo is node-local for the Slurm test nodes; running from a copy in $shared_copy"
    rm -rf "$shared_copy" && mkdir -p "$shared_copy"
    tar -C "$repo" --exclude=./.venv --exclude=./.test-shared -cf - . | tar -C "$shared_copy" -xf -
    exec bash "$shared_copy/scripts/test.sh" "$@"
    ;;
esac
cd "$repo"
bash scripts/setup-env.sh test
if [ "$(id -u)" = 0 ]; then
  bash scripts/setup-test-system.sh  # Debian packages the tests use (headless Chromium)
fi
started_cluster=0
if [ "$(id -u)" = 0 ] && [ "${HPCTUNE_NO_SLURM:-0}" != 1 ]; then
  bash scripts/slurm-cluster-up.sh
  started_cluster=1
else
  echo "test: not root or HPCTUNE_NO_SLURM=1: Slurm tests will be skipped"
fi
cleanup() { if [ "$started_cluster" = 1 ]; then bash scripts/slurm-cluster-down.sh || true; fi; }
trap cleanup EXIT
export PATH="$repo/.venv/bin:$PATH"
.venv/bin/ruff check hpctune tests scripts
if [ "$#" = 0 ]; then
  bash scripts/check_wheel.sh  # a user's (non-editable) install works too
fi
.venv/bin/python -m pytest -ra --durations=15 "$@"  # the slowest tests, to keep the suite fast
