"""What a job asks the local Slurm cluster for (its nodes: 4 CPUs, 6000 MB, 4 fake GPUs each), read from the
real cluster by `submit --dry-run`: an admin's view of the request, without submitting anything."""

from __future__ import annotations

import pytest
from slurm_helpers import SEARCH, cluster_env, hpctune, slurm

pytestmark = [pytest.mark.slurm, slurm]


@pytest.mark.parametrize(("gpus", "cpus", "mem"), [(1, 1, "1500M"), (2, 2, "3000M"), (4, 4, "6000M")])
def test_a_job_asks_for_the_cpus_and_memory_of_its_share_of_the_gpus(shared_tmp, tiny_data, gpus, cpus, mem):
    out = hpctune("submit", *SEARCH, f"data={tiny_data}", "--gpus-per-node", str(gpus), "--nodes", "2",
                  "--time", "0-00:10:00", "--storage", str(shared_tmp), "--name", "share", "--dry-run",
                  env=cluster_env())
    assert out.returncode == 0, out.stderr
    assert f"#SBATCH --cpus-per-task={cpus}\n" in out.stdout and f"#SBATCH --mem={mem}\n" in out.stdout, out.stdout
    assert f"#SBATCH --gres=gpu:{gpus}\n" in out.stdout
    assert not (shared_tmp / "share").exists()  # a dry run writes nothing


def test_a_gpu_partition_without_gpus_asked_for_is_one_line(shared_tmp, tiny_data):
    env = cluster_env()
    env.pop("HPCTUNE_GPUS_PER_NODE")
    out = hpctune("submit", *SEARCH, f"data={tiny_data}", "--nodes", "1", "--time", "0-00:10:00",
                  "--storage", str(shared_tmp), "--name", "nogpus", "--dry-run", env=env)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "--gpus-per-node" in out.stderr and not (shared_tmp / "nogpus").exists()
