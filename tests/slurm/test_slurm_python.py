"""The user's environment on the nodes, on the local Slurm cluster: a setup line activates a second
virtual environment and `--python python` is found after it, so the trials train with that interpreter
(the trial records say which); a `--python` that does not import hpctune ends the job at once, FAILED,
with one line in its log, before any srun. Both routes: `hpctune submit` (submitit) and `hpctune sbatch`.

The second environment is not this one: `python -m venv` gives it its own `python`; a .pth file in its
site-packages lists this environment's site-packages and the repository, so it imports hpctune and its
dependencies, and a `ray` script like the one pip would have installed starts Ray with it. The third
environment has neither. Commands run in a folder other than the repository, so no interpreter finds
hpctune in its working directory.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
from conftest import HPCTUNE, REPO
from slurm_helpers import (
    SEARCH,
    SPACE,
    assert_clean_end,
    assert_completed_search,
    cluster_env,
    events,
    job_logs,
    nodes,
    read_records,
    sh,
    slurm,
    submitted_job,
    wait_job_done,
)

pytestmark = [pytest.mark.slurm, slurm]


@pytest.fixture
def env():
    return cluster_env()


@pytest.fixture
def space(shared_tmp) -> Path:
    path = shared_tmp / "space.yaml"
    path.write_text(SPACE)
    return path


def make_venv(folder: Path, imports_hpctune: bool) -> Path:
    """A virtual environment on shared storage whose `python` is not the one running this test."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    assert python.exists() and str(python) != sys.executable
    if imports_hpctune:
        site = next((folder / "lib").glob("python3*/site-packages"))
        (site / "hpctune-test.pth").write_text(f"{sysconfig.get_paths()['purelib']}\n{REPO}\n")
        # hpctune starts Ray with the `ray` script beside its interpreter, as pip installs it
        ray = Path(sys.executable).parent / "ray"
        script = ray.read_text().split("\n", 1)[1]
        (folder / "bin" / "ray").write_text(f"#!{python}\n{script}")
        (folder / "bin" / "ray").chmod(0o755)
    return folder


def search_args(shared_tmp: Path, tiny_data: Path, space: Path, name: str, venv: Path, nodes_: int,
                samples: int) -> list[str]:
    return [*SEARCH, f"data={tiny_data}", "--space", str(space), "--max-samples", str(samples), "--nodes", str(nodes_),
            "--cpus-per-node", "1", "--time", "0-00:15:00", "--storage", str(shared_tmp), "--name", name,
            "--setup", f"source {venv}/bin/activate", "--python", "python"]


def submit_job(route: str, args: list[str], cwd: Path, env) -> str:
    """Submit through `hpctune submit`, or `hpctune sbatch` and plain sbatch; from `cwd`, not the repository."""
    run = subprocess.run([*HPCTUNE, route, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    if route == "submit":
        return submitted_job(run)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "hpctune_python=python" in run.stdout and "import hpctune.jobs.entry" in run.stdout, run.stdout
    script = cwd / f"{args[args.index('--name') + 1]}.sbatch"
    script.write_text(run.stdout)
    submitted = subprocess.run(["sbatch", "--parsable", str(script)], cwd=cwd, env=env, capture_output=True,
                               text=True, timeout=30)
    assert submitted.returncode == 0, submitted.stderr
    return submitted.stdout.strip().split(";")[0]


@pytest.mark.parametrize("route", ["submit", "sbatch"])
def test_a_second_venv_activated_by_the_setup_line_trains_the_trials(route, env, shared_tmp, tiny_data, space):
    venv = make_venv(shared_tmp / "venv2", imports_hpctune=True)
    run_dir = shared_tmp / "second"
    job = submit_job(route, search_args(shared_tmp, tiny_data, space, "second", venv, 2, 2), shared_tmp, env)
    runs = wait_job_done(env, job, 400, run_dir)
    assert runs[-1]["State"] == "COMPLETED", job_logs(run_dir, job)
    assert_completed_search(run_dir, 2)
    assert_clean_end(env, job, run_dir)
    assert "hpctune: error" not in job_logs(run_dir, job, tail=10**6)

    records = read_records(run_dir)
    used = {r["python"] for rs in records.values() for r in rs}
    assert used == {str(venv / "bin" / "python")}, f"trials ran with {used}, not {venv}/bin/python"
    assert sys.executable not in used
    print(f"trials on {sorted({r['node'] for rs in records.values() for r in rs})} ran with {used}")


@pytest.mark.parametrize("route", ["submit", "sbatch"])
def test_a_python_without_hpctune_fails_the_job_at_once_in_one_line(route, env, shared_tmp, tiny_data, space):
    venv = make_venv(shared_tmp / "venv3", imports_hpctune=False)
    run_dir = shared_tmp / "nohpctune"
    since = time.monotonic()
    job = submit_job(route, search_args(shared_tmp, tiny_data, space, "nohpctune", venv, 2, 1), shared_tmp, env)
    runs = wait_job_done(env, job, 120, run_dir)
    took = time.monotonic() - since
    assert [(r["State"].split()[0], r["ExitCode"]) for r in runs] == [("FAILED", "2:0")], runs
    assert took < 60, f"the job took {took:.0f} s to fail"

    logs = job_logs(run_dir, job, tail=10**6)
    errors = [line for line in logs.splitlines() if line.startswith("hpctune: error:")]
    assert len(errors) == 1, logs
    line = errors[0]
    assert "python 'python' on node " in line and "does not import hpctune after the setup lines" in line, line
    assert "No module named 'hpctune'" in line and line.endswith("install hpctune there or give --python"), line
    assert any(f"on node {node} " in line for node in nodes(env)), line
    assert "Traceback" not in logs, logs
    assert not [e for e in events(run_dir) if e["event"] == "started"], "the search started"
    assert not (run_dir / "trials").exists(), "a trial ran"
    steps = sh(["sacct", "-n", "-P", "-j", job, "-o", "JobID"], env).stdout.split()
    assert not [s for s in steps if "." in s and s.rsplit(".", 1)[1].isdigit()], f"an srun step ran: {steps}"
    print(line)

