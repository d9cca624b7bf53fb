"""A second job of a run that a job is driving (`hpctune resume --submit` twice, the standalone script
submitted again): it leaves at once with one line, before starting Ray, and the first job goes on."""

from __future__ import annotations

import pytest
from slurm_helpers import (
    SEARCH,
    SPACE,
    assert_completed_search,
    cluster_env,
    events,
    hpctune,
    job_logs,
    read_records,
    slurm,
    squeue_state,
    submitted_job,
    wait_for,
    wait_job_done,
)

pytestmark = [pytest.mark.slurm, slurm]


def test_a_second_job_of_a_running_run_leaves_at_once_and_the_first_completes(shared_tmp, tiny_data):
    env = cluster_env()
    space = shared_tmp / "space-twice.yaml"
    space.write_text(SPACE)
    run_dir = shared_tmp / "twice"
    out = hpctune("submit", *SEARCH, f"data={tiny_data}", "--space", str(space), "--max-samples", "3",
                  "--nodes", "1", "--cpus-per-node", "1", "--time", "0-00:10:00", "--storage", str(shared_tmp),
                  "--name", "twice", env=env)
    first = submitted_job(out)
    wait_for(lambda: read_records(run_dir), 300, "the first job's first epoch")

    second = submitted_job(hpctune("resume", str(run_dir), "--submit", env=env))
    runs = wait_job_done(env, second, 120, run_dir)
    assert runs[-1]["State"].split()[0] == "FAILED", runs
    logs = job_logs(run_dir, second)
    assert f"run {run_dir} is being driven by pid" in logs and f"(job {first})" in logs, logs
    assert squeue_state(env, first) == "RUNNING"  # untouched: its Ray cluster and token are its own
    assert not [e for e in events(run_dir) if e.get("job") == second]  # nothing of job 2 in the run's status

    wait_job_done(env, first, 600, run_dir)
    assert_completed_search(run_dir, 3)
