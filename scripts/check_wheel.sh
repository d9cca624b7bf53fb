#!/usr/bin/env bash
# A user's install: build hpctune's wheel, install it (not editable) into a fresh venv, and run the
# SLURM dry runs and a short local search from it, outside the checkout. The fresh venv borrows the
# heavy dependencies from .venv through a .pth file, so this takes seconds, not a 6 GB install.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$repo/.test-shared/wheel-check"  # shared storage for the Slurm test nodes, unlike /tmp
rm -rf "$work" && mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
"$repo/.venv/bin/python" -m pip wheel --quiet --no-deps --no-build-isolation -w "$work/dist" "$repo" 2>&1 \
  | grep -v "^WARNING: Location" || true
"$repo/.venv/bin/python" -m venv "$work/venv"
site="$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
deps="$("$repo/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$deps" > "$site/hpctune-deps.pth"
"$work/venv/bin/python" -m pip install --quiet --no-deps --no-index "$work"/dist/hpctune-*.whl 2>&1 \
  | grep -v "^WARNING: Location" || true
cd "$work"
hpctune="$work/venv/bin/hpctune"
where="$("$work/venv/bin/python" -c 'import hpctune; print(hpctune.__file__)')"
case "$where" in "$site"/*) ;; *) echo "check_wheel: hpctune imported from $where, not the wheel" >&2; exit 1 ;; esac
"$hpctune" --help > /dev/null
"$hpctune" sbatch --help > /dev/null
"$hpctune" profiles --example | grep -q "profiles:"
"$hpctune" demo --storage "$work/runs" --name wheel --max-samples 2 --epochs 2 --grace-period 1 > "$work/demo.log" 2>&1 \
  || { cat "$work/demo.log"; exit 1; }
grep -q "search finished; 2 trials" "$work/demo.log" || { cat "$work/demo.log"; exit 1; }
if ! sinfo > /dev/null 2>&1; then  # the dry runs read the cluster's partitions and limits: none reachable
  echo "check_wheel: the wheel install runs --help, profiles and a demo search; no Slurm cluster reachable: dry runs skipped"
  exit 0
fi
data="$work/runs/demo-data/data.yaml"
"$hpctune" sbatch model=yolov8n.yaml "data=$data" epochs=12 --nodes 2 --gpus-per-node 0 --storage "$work/runs" \
  --name wheel-sbatch --dry-run > "$work/sbatch.txt"
grep -q "^srun " "$work/sbatch.txt"
"$hpctune" submit model=yolov8n.yaml "data=$data" epochs=12 --nodes 2 --gpus-per-node 0 --storage "$work/runs" \
  --name wheel-submit --dry-run > "$work/submit.txt"
grep -q "#SBATCH --nodes=2" "$work/submit.txt"
echo "check_wheel: the wheel install runs --help, profiles, a demo search, and sbatch and submit --dry-run"
