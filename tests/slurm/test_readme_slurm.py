"""The README's SLURM commands, run as written on the local Slurm cluster.

The commands are read from the README's "On a SLURM cluster" code block, not copied here: a README
change that breaks a command breaks this test. Only the user's own values are swapped for the test's
(paths, the partition, a tiny search: SCALED_DOWN); `...` stands for the first command's arguments,
as the README says. The lines are alternatives, so they run in an order that lets each one act:
preview, submit, status, cancel, resume, grow, and a standalone script submitted with sbatch.
"""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest
from conftest import HPCTUNE, REPO
from slurm_helpers import (
    assert_completed_search,
    cluster_env,
    events,
    job_logs,
    read_records,
    slurm,
    submitted_job,
    wait_for,
    wait_job_done,
)

pytestmark = [pytest.mark.slurm, slurm]

# the README's values -> a tiny search on the local cluster (2 nodes with 4 CPUs and 4 fake GPUs each)
SCALED_DOWN = {
    "epochs=50": "epochs=2 imgsz=64 batch=16",
    "--max-samples 64": "--max-samples 2",
    "--max-samples 128": "--max-samples 3",
    "--grace-period 5": "--grace-period 1",
    "-p gpu": "-p debug",
}


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## On a SLURM cluster"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    lines = block.replace("\\\n", " ").splitlines()
    return [re.sub(r"\s+#.*$", "", line).strip() for line in lines if line.strip()]


def local(command: str, data, runs) -> str:
    command = command.replace("/project/me/data.yaml", str(data)).replace("/project/me/runs", str(runs))
    for readme, test in SCALED_DOWN.items():
        command = command.replace(readme, test)
    return command


def run(command: str, env, timeout: float = 180) -> subprocess.CompletedProcess:
    """A README line in a shell (it may redirect and chain), `hpctune` being this checkout's."""
    hpctune = shlex.join(HPCTUNE)
    out = subprocess.run(["bash", "-c", f"hpctune() {{ {hpctune} \"$@\"; }}\n{command}"], capture_output=True,
                         text=True, env=env, cwd=env["HPCTUNE_README_CWD"], timeout=timeout)
    assert out.returncode == 0, f"{command}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out


def test_the_readme_slurm_commands_work_as_written(shared_tmp, tiny_data):
    commands = readme_commands()
    first = next(c for c in commands if c.startswith("hpctune submit") and "..." not in c)
    arguments = first.removeprefix("hpctune submit ")
    runs = shared_tmp / "readme"
    run_dir = runs / "big"
    env = cluster_env(HPCTUNE_README_CWD=str(shared_tmp))
    commands = [local(c.replace("...", arguments.replace("--name big", "--name big-script") if "sbatch" in c
                                else arguments), tiny_data, runs) for c in commands]
    first, dry_run, status, cancel, resume, grow, script = commands
    assert "--dry-run" in dry_run and "sbatch" in script, commands

    preview = run(dry_run, env).stdout  # first: it refuses a run directory that exists
    assert "#SBATCH --nodes=2" in preview and "gpu:4" in preview and not runs.exists(), preview[-2000:]
    job = submitted_job(run(first, env))
    wait_for(lambda: read_records(run_dir), 300, "the first epoch")
    assert job in run(status, env).stdout
    run(cancel, env)
    assert wait_job_done(env, job, 120, run_dir)[-1]["State"].split()[0] in {"CANCELLED", "COMPLETED"}

    job = submitted_job(run(resume, env))
    assert wait_job_done(env, job, 600, run_dir)[-1]["State"] == "COMPLETED", job_logs(run_dir, job)
    assert_completed_search(run_dir, 2)
    job = submitted_job(run(grow, env))
    assert wait_job_done(env, job, 600, run_dir)[-1]["State"] == "COMPLETED", job_logs(run_dir, job)
    assert_completed_search(run_dir, 3)
    assert [e["event"] for e in events(run_dir)].count("started") == 3

    out = run(script, env)
    job = re.search(r"Submitted batch job (\d+)", out.stdout).group(1)
    assert wait_job_done(env, job, 600, runs / "big-script")[-1]["State"] == "COMPLETED"
    assert_completed_search(runs / "big-script", 2)
