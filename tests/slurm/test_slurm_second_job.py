"""A second job of a run that a job is driving: the standalone script from `hpctune sbatch` submitted again
(`hpctune resume --submit` refuses while a job of the run runs; plain sbatch cannot). The second job leaves
at once with one line, before starting Ray, and the first job goes on."""

from __future__ import annotations

import pytest
from slurm_helpers import (
    SPACE,
    assert_completed_search,
    cluster_env,
    events,
    hpctune,
    job_logs,
    read_records,
    sh,
    slurm,
    squeue_state,
    wait_for,
    wait_job_done,
)

pytestmark = [pytest.mark.slurm, slurm]


def _sbatch(script, env) -> str:
    out = sh(["sbatch", "--parsable", str(script)], env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split(";")[0]


@pytest.mark.parametrize("run_lock", ["flock", "lease"])
def test_a_second_job_of_a_running_run_leaves_at_once_and_the_first_completes(shared_tmp, tiny_data, run_lock):
    """Both kinds of run lock: flock, and the lease (HPCTUNE_RUN_LOCK=lease, as where flock is refused or
    node-local), whose holder line names the first job."""
    env = cluster_env(**({"HPCTUNE_RUN_LOCK": "lease"} if run_lock == "lease" else {}))
    space = shared_tmp / "space-twice.yaml"
    space.write_text(SPACE)
    run_dir = shared_tmp / "twice"
    # long enough (2 trials x 20 one-second epochs) that the first job is still running when the second ends
    out = hpctune("sbatch", "model=yolov8n.yaml", "epochs=20", "imgsz=64", "batch=16", "--grace-period", "20",
                  f"data={tiny_data}", "--space", str(space), "--max-samples", "2", "--nodes", "1",
                  "--cpus-per-node", "1", "--time", "0-00:10:00", "--storage", str(shared_tmp), "--name", "twice",
                  env=env)
    assert out.returncode == 0, out.stderr
    script = shared_tmp / "twice.sbatch"
    script.write_text(out.stdout)
    first = _sbatch(script, env)
    wait_for(lambda: read_records(run_dir), 300, "the first job's first epoch")

    second = _sbatch(script, env)
    runs = wait_job_done(env, second, 120, run_dir)
    assert runs[-1]["State"].split()[0] == "FAILED", runs
    logs = job_logs(run_dir, second)
    assert f"run {run_dir} is being driven by pid" in logs and f"(job {first})" in logs, logs
    assert ("[lease: HPCTUNE_RUN_LOCK=lease]" in logs) == (run_lock == "lease"), logs
    assert squeue_state(env, first) == "RUNNING"  # untouched: its Ray cluster and token are its own
    assert not [e for e in events(run_dir) if e.get("job") == second]  # nothing of job 2 in the run's status

    assert wait_job_done(env, first, 600, run_dir)[-1]["State"] == "COMPLETED", job_logs(run_dir, first)
    assert_completed_search(run_dir, 2)
