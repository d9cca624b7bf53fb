"""Helpers for the tests against the local Slurm cluster (scripts/slurm-cluster-up.sh)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import local_slurm_env
import pytest
from conftest import run_cli, wait_for
from local_slurm_env import ENV_FILE

slurm = pytest.mark.skipif(
    not ENV_FILE.exists(),
    reason=f"local Slurm cluster not up ({ENV_FILE} absent): run scripts/slurm-cluster-up.sh",
)

# Tiny searches: a few seconds per epoch here; trials train on the CPU even where Ray hands out fake GPUs.
SEARCH = ["model=yolov8n.yaml", "epochs=2", "imgsz=64", "batch=16", "--grace-period", "1", "--reduction-factor", "2"]
SPACE = "lr0: {loguniform: [1.0e-4, 1.0e-1]}\n"


def cluster_env(**extra: str) -> dict[str, str]:
    """local_slurm_env.cluster_env, with trials training on the CPU where Ray hands out fake GPUs."""
    env = local_slurm_env.cluster_env()
    env["HPCTUNE_FORCE_CPU"] = "1"
    env.update(extra)
    return env


def nodes(env) -> list[str]:
    return env["HPCTUNE_SLURM_NODES"].split()


def hpctune(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return run_cli(*args, timeout=timeout, env=env)


def submitted_job(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 0, out.stderr[-3000:]
    return re.search(r"submitted job (\d+)", out.stdout).group(1)


def sh(args: list[str], env, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)


def squeue_state(env, job: str) -> str | None:
    out = sh(["squeue", "-h", "-j", job, "-o", "%T"], env)
    return out.stdout.strip() or None


def wait_job_done(env, job: str, timeout: float, run_dir: Path | None = None) -> list[dict[str, str]]:
    """Wait until Slurm no longer lists the job; return sacct's records of each of its runs."""
    try:
        wait_for(lambda: squeue_state(env, job) is None, timeout, f"job {job} to end", poll=1)
    except AssertionError:
        sh(["scancel", job], env)
        raise AssertionError(f"job {job} did not end in {timeout} s:\n{job_logs(run_dir, job)}") from None
    fields = ["State", "ExitCode", "Start", "NodeList"]
    for _ in range(30):
        out = sh(["sacct", "-n", "-X", "-P", "-D", "-j", job, "-o", ",".join(fields)], env)
        rows = [dict(zip(fields, line.split("|"), strict=True)) for line in out.stdout.strip().splitlines()]
        if rows and rows[-1]["State"].split()[0] not in {"RUNNING", "PENDING", "COMPLETING"}:
            return rows
        time.sleep(0.5)
    raise AssertionError(f"sacct has no final state for job {job}")


def job_logs(run_dir: Path | None, job: str, tail: int = 3000) -> str:
    if run_dir is None:
        return ""
    text = []
    for f in sorted((run_dir / "slurm").glob(f"{job}_*log.*")):
        text.append(f"== {f.name}\n{f.read_text(errors='replace')[-tail:]}")
    return "\n".join(text)


def read_records(run_dir: Path) -> dict[str, list[dict]]:
    folder = run_dir / "trials"
    if not folder.is_dir():
        return {}
    found = {}
    for trial in sorted(folder.iterdir()):
        path = trial / "epochs.jsonl"
        if path.exists():
            lines = [line for line in path.read_text().splitlines() if line.strip()]
            found[trial.name] = [json.loads(line) for line in lines]
    return found


def finished(records: list[dict]) -> bool:
    return any(r.get("final") for r in records)


def events(run_dir: Path) -> list[dict]:
    path = run_dir / "slurm" / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def leftover_processes(key: str) -> list[str]:
    """Processes (of any node: they share this machine's /proc) of the Ray clusters of ``key``: a job
    ('<job>') or one of its steps ('<job>.<step>'), found by the marker ray_cluster puts in their
    environment."""
    needle = f"HPCTUNE_RAY_NODE={key}.".encode()
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if needle in Path(f"/proc/{pid}/environ").read_bytes():
                left.append(f"{pid} {Path(f'/proc/{pid}/cmdline').read_bytes()[:100]!r}")
        except OSError:
            pass
    return left


def kill_ray_node(job: str, rank: int) -> float:
    """SIGKILL every Ray process of one node of the job (its node is lost to the search), found by
    the marker ray_cluster puts in their environment: processes of the test's own job. Returns when."""
    pattern = re.compile(rf"HPCTUNE_RAY_NODE={job}\.\w+\.r\d+\.{rank}-".encode())
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if pattern.search(Path(f"/proc/{pid}/environ").read_bytes()):
                pids.append(int(pid))
        except OSError:
            pass
    assert pids, f"no Ray process of rank {rank} of job {job}"
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return time.time()


def assert_clean_end(env, job: str, run_dir: Path, killed: bool = False) -> None:
    """No job step, Ray process or node-local temp dir of the job is left (a job that was killed,
    not signalled, may leave its temp dirs: nothing of it ran to clean them)."""
    assert sh(["squeue", "-h", "-s", "-j", job], env).stdout.strip() == "", "job steps still running"
    wait_for(lambda: not leftover_processes(job), 15, f"job {job}'s Ray processes to exit")
    temp = sorted(Path(env["HPCTUNE_SLURM_STATE"], "nodes").glob(f"*/tmp/hpct-{job}.*"))
    assert killed or temp == [], f"node-local Ray temp dirs left: {temp}"
    for folder in (run_dir / "cluster").glob(f"ray-{job}.*"):
        assert killed or not (folder / "token").exists(), "the Ray token outlived its cluster"


def assert_completed_search(run_dir: Path, trials: int) -> dict:
    info = summary(run_dir)
    assert info["finished"], info
    assert set(info["trials"]) <= {"completed", "stopped"} and sum(info["trials"].values()) == trials, info
    assert (run_dir / "results.csv").exists() and (run_dir / "best_hyperparameters.yaml").exists()
    # the searcher, across every requeue: each trial suggested once, no configuration twice
    journal = [json.loads(line) for line in (run_dir / "suggestions.jsonl").read_text().splitlines()]
    ids = [entry["trial_id"] for entry in journal]
    assert len(ids) == len(set(ids)) == trials, ids
    assert len({json.dumps(entry["config"], sort_keys=True) for entry in journal}) == trials, journal
    return info
