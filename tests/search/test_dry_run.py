"""SLURM dry runs where Slurm is not installed (a laptop, CI): the script is printed, the cluster checks
are skipped with a notice, and nothing is written."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO


def test_submit_and_sbatch_dry_runs_work_without_slurm(shared_tmp, tiny_data):
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}  # no sbatch, no sinfo
    common = ["model=yolov8n.yaml", f"data={tiny_data}", "epochs=12", "--nodes", "2", "--gpus-per-node", "4",
              "--storage", str(shared_tmp / "runs"), "--name", "preview", "--dry-run"]
    for command in ("submit", "sbatch"):
        out = subprocess.run([sys.executable, "-m", "hpctune", command, *common], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        assert "Slurm is not installed here: partition, limit and node-size checks skipped" in out.stderr
        assert "#SBATCH --nodes=2" in out.stdout and "#SBATCH --gres=gpu:4" in out.stdout
    assert not (shared_tmp / "runs").exists(), "a dry run writes nothing"
