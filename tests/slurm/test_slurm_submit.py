"""`hpctune submit`, `hpctune sbatch`, `status`, `cancel`, `resume --submit` on the local Slurm
cluster: real jobs, a real Ray cluster over the allocated nodes, real (tiny) YOLO training.

The token check (a Ray client without the token is refused) is in test_ray_cluster_slurm.py.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
from conftest import REPO
from slurm_helpers import (
    SEARCH,
    SPACE,
    assert_clean_end,
    assert_completed_search,
    cluster_env,
    events,
    finished,
    hpctune,
    job_logs,
    kill_ray_node,
    nodes,
    read_records,
    sh,
    slurm,
    submitted_job,
    wait_for,
    wait_job_done,
)

GOLDEN = Path(__file__).parents[1] / "golden" / "submit-dry-run.txt"
pytestmark = [pytest.mark.slurm, slurm]


@pytest.fixture
def env():
    return cluster_env()


@pytest.fixture
def space(shared_tmp) -> Path:
    path = shared_tmp / "space.yaml"
    path.write_text(SPACE)
    return path


def test_submit_three_nodes_cancel_lost_node_scancel_and_resume_submit(env, shared_tmp, tiny_data, space):
    """A 3-node ASHA search whose trials run on all 3 nodes, through everything a run meets:
    `hpctune cancel` stops job 1 gracefully; in job 2 (`resume --submit`) the last node's Ray is
    killed mid-trial and the trial continues from its checkpoint on another node, then plain
    `scancel` ends job 2 abruptly; job 3 completes the search. No job is requeued, no finished
    trial runs again, no epoch is trained twice."""
    run_dir = shared_tmp / "three"
    secret = "hpctune-test-secret-4f9c2e"  # a W&B key in the submitting shell: in no file of the run
    out = hpctune("submit", *SEARCH, "epochs=3", f"data={tiny_data}", "--space", str(space), "--max-samples", "9",
                  "--grace-period", "2", "--nodes", "3", "--cpus-per-node", "1", "--time", "0-00:20:00",
                  "--storage", str(shared_tmp), "--name", "three", "--setup", "echo hpctune-setup-on-$(hostname)",
                  env={**env, "WANDB_API_KEY": secret})
    first = submitted_job(out)
    assert f"run directory {run_dir}" in out.stdout
    _assert_dry_run_shows_what_was_submitted(run_dir, first)

    def mid_run():
        records = read_records(run_dir)
        done = [t for t, rs in records.items() if finished(rs)]
        # at most 3 of 9 finished: job 2 still starts fresh trials on every one-CPU node
        return done and len(done) <= 3 and len(records) > len(done)

    # job 1: hpctune cancel
    wait_for(mid_run, 400, "a finished trial and one in progress")
    out = hpctune("cancel", str(run_dir), env=env)
    assert out.returncode == 0 and f"job {first} stopped and cancelled" in out.stdout, out.stdout + out.stderr
    runs = wait_job_done(env, first, 60, run_dir)
    assert len(runs) == 1 and runs[0]["State"].split()[0] in {"CANCELLED", "COMPLETED"}, runs  # not requeued
    stop = [e for e in events(run_dir) if e["event"] == "interrupted"]
    assert [(e["signal"], e["reason"], e["requeue"]) for e in stop] == [("SIGUSR2", "cancelled", False)], stop
    assert_clean_end(env, first, run_dir)
    records = {1: read_records(run_dir)}

    # job 2: a worker node (not the head's) is lost mid-trial, then scancel
    second = submitted_job(hpctune("resume", str(run_dir), "--submit", env=env))

    def fresh_trial_on_a_worker():
        starts = [e for e in events(run_dir) if e["event"] == "started"]
        if len(starts) < 2:
            return None
        for trial, rs in read_records(run_dir).items():
            if rs and rs[-1]["session"] == 2 and rs[-1]["epoch"] == 1 and rs[-1]["node"] != starts[-1]["nodes"][0]:
                return trial, rs[-1]["node"], starts[-1]
        return None
    trial, last, start = wait_for(fresh_trial_on_a_worker, 400, "a trial with one epoch on a worker node")
    killed_at = kill_ray_node(second, start["nodes"].index(last))
    wait_for(lambda: [r for r in read_records(run_dir)[trial] if r["time"] > killed_at], 300,
             f"trial {trial} to continue after {last} was lost")
    sh(["scancel", second], env)
    runs = wait_job_done(env, second, 60, run_dir)
    assert [r["State"].split()[0] for r in runs] == ["CANCELLED"], runs
    assert_clean_end(env, second, run_dir, killed=True)
    records[2] = read_records(run_dir)
    later = [r for r in records[2][trial] if r["time"] > killed_at]
    assert later[0]["epoch"] == 2 and later[0]["node"] != last and later[0]["session"] == 2, later
    assert "stopped: Ray on" in job_logs(run_dir, second), "the lost node's task did not end quietly"

    # job 3: completes
    third = submitted_job(hpctune("resume", str(run_dir), "--submit", env=env))
    runs = wait_job_done(env, third, 400, run_dir)
    assert runs[-1]["State"] == "COMPLETED", job_logs(run_dir, third)
    assert_completed_search(run_dir, 9)
    assert_clean_end(env, third, run_dir)
    assert not list((run_dir / "cluster").glob("*/token")), "a killed job's Ray token was left behind"

    after = read_records(run_dir)
    for before in records.values():
        for trial_id, rs in before.items():
            assert after[trial_id][: len(rs)] == rs, "records are append-only"
            if finished(rs):
                assert after[trial_id] == rs, f"finished trial {trial_id} ran again"
    for trial_id, rs in after.items():
        trained = [r["epoch"] for r in rs if not r.get("final")]
        assert trained == list(range(1, len(trained) + 1)), f"trial {trial_id} trained {trained}"
    trained_on = {r["node"] for rs in after.values() for r in rs}
    assert trained_on == set(nodes(env)), trained_on
    leaks = [p for p in run_dir.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert not leaks, f"the W&B key was written to {leaks}"
    logs = job_logs(run_dir, first, tail=10**6)
    for node in nodes(env):
        assert f"hpctune-setup-on-{node}" in logs, f"setup line did not run on {node}"

    status = hpctune("status", str(run_dir), env=env)
    assert status.returncode == 0, status.stderr
    text = status.stdout
    assert re.search(r"run three: finished", text), text
    for job, state in ((first, "C"), (second, "CANCELLED"), (third, "COMPLETED")):
        assert f"job {job}: {state}" in text, text
    # scancel's TERM is recorded too when the stop's 5 s deadline runs out before Slurm's KillWait kills the
    # job (a matter of seconds), never as a requeue
    scancelled = f"job {second} (restart 0): SIGTERM terminated, not requeued"
    recorded = scancelled in text
    assert f"interruptions: {2 if recorded else 1}" in text, text
    assert "resumes: 2" in text and "best so far: trial" in text, text
    assert "newest checkpoint:" in text and "trials: " in text, text
    print(text)


def _assert_dry_run_shows_what_was_submitted(run_dir: Path, job: str) -> None:
    from hpctune.jobs.submit import job_name, python_command
    from hpctune.run.rundir import RunDir
    from hpctune.run.spec import RunSpec
    from hpctune.slurm.sbatch import render_submitit
    from hpctune.slurm.settings import ClusterSettings

    spec = RunSpec.from_dict(RunDir(run_dir).read_manifest()["spec"])
    rendered = render_submitit(ClusterSettings.from_dict(spec.cluster), job_name(spec), run_dir / "slurm",
                               python_command())
    assert (run_dir / "slurm" / f"{job}_submission.sh").read_text() == rendered


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


BAD = {
    # name: (extra arguments, environment changes, words of the one-line error)
    "unknown partition": (["--partition", "nope"], {}, "unknown partition 'nope': use one of debug, high"),
    "too many GPUs per node": (["--gpus-per-node", "5"], {}, "--gpus-per-node 5 is more than partition 'debug'"),
    "malformed time": (["--time", "1:99:00"], {}, "--time '1:99:00' has a field out of range"),
    "no sbatch on PATH": ([], {"PATH": "/nonexistent"}, "no `sbatch` on PATH"),
    "node-local storage": (["--nodes", "2", "--storage", "/tmp/hpctune-runs"], {}, "is node-local (/tmp)"),
    "gpu_per_trial above GPUs per node": (["--gpus-per-node", "1", "--gpu-per-trial", "2"], {},
                                          "gpu_per_trial 2.0 is more than the 1 GPU(s)"),
    "unknown profile": (["--profile", "nope"], {}, "unknown profile 'nope'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_submit_input_is_one_line_and_submits_nothing(case, env, shared_tmp, tiny_data, space):
    arguments, changes, words = BAD[case]
    if "--storage" not in arguments:
        arguments = [*arguments, "--storage", str(shared_tmp / "runs")]
    jobs_before = sh(["squeue", "-h", "-o", "%i"], env).stdout.split()
    before = _tree(shared_tmp)
    out = hpctune("submit", *SEARCH, f"data={tiny_data}", "--space", str(space), "--name", "bad", *arguments,
                  env={**env, **changes, "HPCTUNE_PROFILES": str(shared_tmp / "none.yaml")})
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr
    assert lines[-1].startswith("hpctune: error: ") and words in lines[-1], lines[-1]
    assert "Traceback" not in out.stderr
    assert _tree(shared_tmp) == before, "something was written"
    assert not Path("/tmp/hpctune-runs").exists()
    new = set(sh(["squeue", "-h", "-n", "hpctune-bad", "-o", "%i"], env).stdout.split()) - set(jobs_before)
    assert not new, f"a job was submitted: {new}"


def test_sbatch_script_and_tune_in_a_users_job_share_nodes_and_fake_gpus(env, shared_tmp, tiny_data, space):
    """Two searches at once on the same two nodes (no port collision): a script from `hpctune sbatch`
    submitted with plain sbatch, and a user's own batch script that runs `hpctune tune`, which uses
    every node of its allocation by itself. Fake GPUs: gpu_per_trial=1 gives concurrent trials
    disjoint GPUs; gpu_per_trial=0.5 packs two trials on one GPU; the two jobs' GPUs differ."""
    two = ",".join(nodes(env)[:2])
    # One CPU and 1 GB per node and job, half a CPU per trial: both jobs fit beside other users' jobs.
    search = [*SEARCH, f"data={tiny_data}", "--space", str(space), "--max-samples", "3", "--storage", str(shared_tmp),
              "--cpus-per-trial", "0.5"]
    out = hpctune("sbatch", *search, "--name", "whole", "--nodes", "2", "--cpus-per-node", "1", "--mem", "1G",
                  "--time", "0-00:20:00", "--gpus-per-node", "2", "--gpu-per-trial", "1",
                  "--sbatch-arg", f"nodelist={two}", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("#!/bin/bash") and "hpctune.jobs.entry" in out.stdout
    (shared_tmp / "whole.sbatch").write_text(out.stdout)
    users = shared_tmp / "users.sbatch"
    users.write_text(
        "#!/bin/bash\n"
        f"#SBATCH --nodes=2 --ntasks-per-node=1 --cpus-per-task=1 --mem=1G --gres=gpu:1 --time=20 --nodelist={two}\n"
        f"#SBATCH --output={shared_tmp}/users-%j.out --job-name=hpctune-users-script\n"
        f"cd {REPO}\n"
        f"{shlex.join([sys.executable, '-m', 'hpctune', 'tune', *search, '--name', 'half'])} "
        "--gpu-per-trial 0.5\n"
    )
    jobs = {}
    for name, script in (("whole", shared_tmp / "whole.sbatch"), ("half", users)):
        submitted = sh(["sbatch", "--parsable", str(script)], env)
        assert submitted.returncode == 0, submitted.stderr
        jobs[name] = submitted.stdout.strip().split(";")[0]
    for name, job in jobs.items():
        runs = wait_job_done(env, job, 500, shared_tmp / name)
        output = "".join(p.read_text() for p in shared_tmp.glob(f"users-{job}.out"))
        assert runs[-1]["State"] == "COMPLETED", job_logs(shared_tmp / name, job) + output
        assert_completed_search(shared_tmp / name, 3)
        assert_clean_end(env, job, shared_tmp / name)
    users_output = (shared_tmp / f"users-{jobs['half']}.out").read_text()
    assert "running on the 2 node(s) of job" in users_output and "search finished" in users_output, users_output

    starts = {name: next(e for e in events(shared_tmp / name) if e["event"] == "started") for name in jobs}
    ends = {name: next(e for e in events(shared_tmp / name) if e["event"] == "ended") for name in jobs}
    assert max(s["time"] for s in starts.values()) < min(e["time"] for e in ends.values()), "the jobs did not overlap"
    assert starts["whole"]["head"] != starts["half"]["head"], starts
    assert all(s["nodes"] == nodes(env)[:2] for s in starts.values()), starts
    gpus: dict[str, dict[str, set[str]]] = {}
    for name in jobs:
        per_node: dict[str, list[tuple[str, str]]] = {}
        for trial, rs in read_records(shared_tmp / name).items():
            training = [r for r in rs if not r.get("final")]
            devices = {r["cuda_visible_devices"] for r in training}
            assert len(devices) == 1 and None not in devices, (name, trial, devices)
            device = devices.pop()
            assert len(device.split(",")) == 1, (name, trial, device)
            per_node.setdefault(training[0]["node"], []).append((trial, device))
            gpus.setdefault(name, {}).setdefault(training[0]["node"], set()).add(device)
        assert any(len(ts) >= 2 for ts in per_node.values()), f"{name}: no node ran two trials at once: {per_node}"
        for trials in per_node.values():  # all 3 trials of a job run at once (2 slots per node)
            devices = [d for _, d in trials]
            if name == "whole":
                assert len(set(devices)) == len(devices), f"concurrent trials share a GPU: {trials}"
            else:
                assert len(set(devices)) == 1, f"trials on one node did not share its one GPU: {trials}"
    for node in set(gpus["whole"]) & set(gpus["half"]):
        assert not gpus["whole"][node] & gpus["half"][node], f"the jobs share a GPU on {node}: {gpus}"
    print(f"GPUs per job and node: {gpus}")


def test_status_of_a_local_run_without_jobs(shared_tmp, tiny_data, space):
    """status works for any run directory; a run never submitted says so."""
    from hpctune.api import create_run
    from hpctune.run.spec import Resources
    from hpctune.yolo.arguments import build_spec

    spec = build_spec(model="yolov8n.yaml", data=str(tiny_data), space=str(space), epochs=2, grace_period=1,
                      max_samples=2, storage=shared_tmp, name="local", resources=Resources(cpus=1, gpus=0))
    create_run(spec)
    out = hpctune("status", str(shared_tmp / "local"), env=cluster_env())
    assert out.returncode == 0, out.stderr
    assert "run local: new" in out.stdout and "no SLURM job recorded" in out.stdout, out.stdout
