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
from hpctune.slurm.sbatch import bind_paths, container_for, node_command, python_command, submitit_parameters
from hpctune.slurm.settings import ClusterSettings, check_container_image

log = logging.getLogger(__name__)


def job_name(spec: RunSpec) -> str:
    return f"hpctune-{spec.name}"


def node_paths(spec: RunSpec, run_dir: str | Path | None = None) -> list[str]:
    """The folders a search's nodes read or write, bound into a --container: the run directory's storage
    folder (the run itself, and a --warm-start run beside it), the dataset's root and any split outside it,
    the model file's folder, the warm-start run. Shipped model names (yolov8n.yaml) come with the image."""
    run_dir = Path(run_dir or spec.run_dir)
    paths = [run_dir.parent]
    if spec.data_config:  # trials read RUN_DIR/data.yaml, whose `path` is the dataset's absolute root
        root = Path(spec.data_config.get("path") or Path(spec.data).parent)
        paths.append(root)
        for split in ("train", "val", "test"):
            entries = spec.data_config.get(split) or []
            paths += [_split_folder(root / str(e)) for e in (entries if isinstance(entries, list) else [entries])]
    else:
        paths.append(Path(spec.data))  # a classification dataset's folder
    if Path(spec.model).is_absolute():
        paths.append(Path(spec.model).parent)
    if spec.warm_start:
        paths.append(Path(spec.warm_start))
    return bind_paths(paths)


def _split_folder(path: Path) -> Path:
    """What a split outside the dataset root needs: Ultralytics finds labels beside the last `images`
    folder (.../images/x -> .../labels/x), and resolves a list file's ./ entries against its folder."""
    last = len(path.parts) - 1 - path.parts[::-1].index("images") if "images" in path.parts else 0
    if last > 1:  # not the root folder itself
        return Path(*path.parts[:last])
    return path if path.is_dir() else path.parent


def make_executor(rundir: RunDir, spec: RunSpec, settings: ClusterSettings) -> submitit.SlurmExecutor:
    """submitit's executor for this run: logs and pickles in RUN_DIR/slurm, on shared storage. Its
    `python` runs on each node after the setup lines (in the container, if any); its `setup` lines hold
    the preflight."""
    python = python_command(settings.python, settings.container)
    paths = node_paths(spec, rundir.path) if settings.container else []
    executor = submitit.SlurmExecutor(
        folder=rundir.path / events.SLURM_DIR, max_num_timeout=settings.max_requeues,
        python=node_command(settings.setup, python, container_for(settings, paths)),
    )
    executor.update_parameters(**submitit_parameters(settings, job_name(spec), python, paths))
    return executor


def submit(run_dir: str | Path, route: str = "submit") -> str:
    """Submit the run as a job with its own cluster settings; return the job id."""
    rundir = RunDir(run_dir)
    spec, settings = cluster_settings(rundir)
    queries.require("sbatch")
    check_container_image(settings)
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


