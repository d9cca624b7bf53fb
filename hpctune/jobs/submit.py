"""A search as a SLURM job through submitit: submission, the run's jobs, cancelling one."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import submitit

from hpctune.errors import ClusterError
from hpctune.jobs.entry import SearchJob, cluster_settings
from hpctune.run.rundir import RunDir
from hpctune.run.spec import RunSpec
from hpctune.slurm import events, queries
from hpctune.slurm.sbatch import node_command, python_command, submitit_parameters
from hpctune.slurm.settings import ClusterSettings

log = logging.getLogger(__name__)


def job_name(spec: RunSpec) -> str:
    return f"hpctune-{spec.name}"


def make_executor(rundir: RunDir, spec: RunSpec, settings: ClusterSettings) -> submitit.SlurmExecutor:
    """submitit's executor for this run: logs and pickles in RUN_DIR/slurm, on shared storage. Its
    `python` runs on each node after the setup lines; its `setup` lines hold the preflight."""
    python = python_command(settings.python)
    executor = submitit.SlurmExecutor(
        folder=rundir.path / events.SLURM_DIR, max_num_timeout=settings.max_requeues,
        python=node_command(settings.setup, python),
    )
    executor.update_parameters(**submitit_parameters(settings, job_name(spec), python))
    return executor


def submit(run_dir: str | Path, route: str = "submit") -> str:
    """Submit the run as a job with its own cluster settings; return the job id."""
    rundir = RunDir(run_dir)
    spec, settings = cluster_settings(rundir)
    queries.require("sbatch")
    active = active_jobs(rundir)
    if active:
        job, state = active[0]
        raise ClusterError(f"job {job} of run {rundir.path} is {state}: wait for it or `hpctune cancel` it first")
    executor = make_executor(rundir, spec, settings)
    try:
        job = executor.submit(SearchJob(str(rundir.path)))
    except Exception as exc:  # noqa: BLE001  (submitit wraps sbatch's refusal in several types)
        why = str(exc).strip().splitlines()
        raise ClusterError(f"sbatch refused the job: {why[-1] if why else exc.__class__.__name__}") from None
    events.record(rundir.path, "submitted", job=str(job.job_id), route=route, nodes=settings.nodes)
    return str(job.job_id)


def active_jobs(rundir: RunDir) -> list[tuple[str, str]]:
    """(job id, state) of this run's jobs that Slurm still queues or runs."""
    found = []
    for job in events.job_ids(events.read(rundir.path)):
        state = queries.squeue_state(job)
        if state is not None and state not in {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT"}:
            found.append((job, state))
    return found


def cancel_job(rundir: RunDir, job: str, state: str, wait_s: float = 60) -> str:
    """Cancel one job of the run. A running one first gets USR2 in its steps, the signal the search
    stops gracefully on (TERM would stop Ray's own processes under it), with a marker that says
    "do not requeue"; `wait_s` seconds later at the most, scancel ends the job."""
    events.cancel_marker(rundir.path, job).write_text("cancelled with hpctune cancel\n")
    events.record(rundir.path, "cancel", job=job, state=state)
    if state == "RUNNING":
        since = time.time()
        queries.run(["scancel", "--signal=USR2", job], check=False)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and queries.squeue_state(job) is not None:
            stopped = any(e.get("event") in {"interrupted", "ended", "failed"} and e.get("job") == job
                          and e["time"] >= since - 1 for e in events.read(rundir.path))
            if stopped:
                break
            time.sleep(1)
    if queries.squeue_state(job) is not None:
        queries.cancel(job)
    return "stopped and cancelled" if state == "RUNNING" else "cancelled"


