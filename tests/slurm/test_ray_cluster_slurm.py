"""hpctune.raycluster.cluster on a real multi-node Slurm cluster (scripts/slurm-cluster-up.sh).

Each node there has its own network namespace, IP and /tmp; the rest of the filesystem is
shared. Jobs run ``srun --ntasks-per-node=1 python -m hpctune.raycluster.selftest`` (see
hpctune/ray_selftest.py), whose rank 0 prints ``HPCTUNE_RAY_UP {json}`` once all nodes have
joined and ``HPCTUNE_RAY {json}`` with one Ray task's view from each node.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from local_slurm_env import ENV_FILE, cluster_env
from slurm_helpers import leftover_processes

from hpctune.errors import ClusterError
from hpctune.raycluster.cluster import ray_cluster
from hpctune.raycluster.node import MARKER_VAR, STOPPED_LINE, sweep_stale_temp_dirs
from hpctune.raycluster.ports import SLOT_SIZE, PortPlan, candidate_plans, port_range, preferred_slot
from hpctune.slurm.allocation import Allocation

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / ".test-shared" / "ray-cluster"
PYTHON = sys.executable

slurm = pytest.mark.skipif(
    not ENV_FILE.exists(),
    reason=f"local Slurm cluster not up ({ENV_FILE} absent): run scripts/slurm-cluster-up.sh",
)


@pytest.fixture(scope="module")
def cenv() -> dict[str, str]:
    env = cluster_env()
    if len(env.get("HPCTUNE_SLURM_NODES", "").split()) < 3:
        pytest.skip("the local Slurm cluster has fewer than 3 nodes: HPCTUNE_TEST_NODES=3")
    return env


def three_nodes(cenv) -> list[str]:
    """The jobs run on the cluster's first 3 nodes (the same 3 for every job)."""
    return cenv["HPCTUNE_SLURM_NODES"].split()[:3]


def three_ips(cenv) -> set[str]:
    return set(cenv["HPCTUNE_SLURM_NODE_IPS"].split()[:3])


def _run(cmd: list[str], env, timeout=20) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


_submitted: list[str] = []


@pytest.fixture(autouse=True)
def _cancel_leftover_jobs(request):
    """A failed test must not leave its jobs running on the shared cluster."""
    yield
    if _submitted:
        _run(["scancel", *_submitted], request.getfixturevalue("cenv"))
        _submitted.clear()


def submit(cenv, workdir: Path, args: str, *, sbatch: str = "", srun: str = "") -> str:
    """sbatch a 3-node job running the ray_cluster entry with ``args``; return the job id."""
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / "job.sh"
    script.write_text(
        "#!/bin/bash\n"
        f"export PYTHONPATH={REPO}\n"
        f"srun --ntasks-per-node=1 {srun} {PYTHON} -m hpctune.raycluster.selftest "
        f"--shared-dir {workdir} --timeout 60 {args}\n"
    )
    cmd = ["sbatch", "--parsable", "-N3", "--ntasks-per-node=1", "--cpus-per-task=2",
           "--gres=gpu:2", "--mem=1G", "-t", "5", f"--nodelist={','.join(three_nodes(cenv))}",
           f"--chdir={REPO}", f"--output={workdir}/slurm-%j.out",
           f"--job-name=hpct-{workdir.name}", *sbatch.split(), str(script)]
    out = _run(cmd, cenv)
    assert out.returncode == 0, out.stderr
    job = out.stdout.strip().split(";")[0]
    _submitted.append(job)
    return job


def job_state(cenv, job: str) -> str | None:
    """squeue's state while queued/running, else None."""
    out = _run(["squeue", "-h", "-j", job, "-o", "%T"], cenv)
    return out.stdout.strip() or None


def wait_done(cenv, job: str, timeout: float) -> tuple[str, str]:
    """Wait until the job left squeue; return (State, ExitCode) from sacct."""
    end = time.monotonic() + timeout
    while job_state(cenv, job) is not None:
        if time.monotonic() > end:
            _run(["scancel", job], cenv)
            pytest.fail(f"job {job} still {job_state(cenv, job)} after {timeout} s")
        time.sleep(0.5)
    for _ in range(20):  # accounting lags a little behind squeue
        out = _run(["sacct", "-n", "-X", "-P", "-j", job, "-o", "State,ExitCode"], cenv)
        line = out.stdout.strip().splitlines()
        if line and line[0].split("|")[0] not in ("RUNNING", "PENDING", "COMPLETING"):
            return tuple(line[0].split("|"))  # type: ignore[return-value]
        time.sleep(0.5)
    pytest.fail(f"sacct has no final state for job {job}: {out.stdout} {out.stderr}")


def wait_for_line(path: Path, prefix: str, timeout: float, cenv=None, job=None) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith(prefix + " "):
                    return json.loads(line[len(prefix) + 1 :])
        if job and job_state(cenv, job) is None:
            break
        time.sleep(0.3)
    text = path.read_text(errors="replace") if path.exists() else "(no output)"
    pytest.fail(f"no {prefix} line in {path} within {timeout} s:\n{text[-3000:]}")


def job_output(workdir: Path, job: str) -> str:
    return (workdir / f"slurm-{job}.out").read_text(errors="replace")


def head_info(workdir: Path, job: str) -> dict:
    (run_dir,) = workdir.glob(f"ray-{job}.*")
    return json.loads((run_dir / "head.json").read_text()) | {"run_dir": run_dir}


def assert_torn_down(cenv, job: str, info: dict) -> None:
    state = cenv["HPCTUNE_SLURM_STATE"]
    assert leftover_processes(info["run_dir"].name[len("ray-"):].rsplit(".r", 1)[0]) == []
    temp = sorted(str(p) for p in Path(state, "nodes").glob(f"*/tmp/hpct-{job}.*"))
    assert temp == [], "node-local Ray temp dirs left"
    assert not (info["run_dir"] / "token").exists()
    assert (info["run_dir"] / "shutdown").read_text().strip() == info["nonce"]
    steps = _run(["squeue", "-h", "-s", "-j", job], cenv).stdout.strip()
    assert steps == "", f"job steps still running: {steps}"


def stopped_nodes(info: dict) -> list[str]:
    """Nodes whose ray start log ends with hpctune's teardown line (written by the node
    itself, so it does not depend on srun still forwarding output)."""
    return sorted(f.name.split(".")[2] for f in info["run_dir"].glob("ray-start.*.log")
                  if STOPPED_LINE in f.read_text(errors="replace").splitlines()[-1])


def check_selftest(out: dict, cenv, *, cpus=2, gpus=2) -> None:
    ips, hosts = three_ips(cenv), set(three_nodes(cenv))
    assert out["num_nodes"] == 3
    assert {n["ip"] for n in out["nodes"]} == ips
    for n in out["nodes"]:  # from the allocation (--cpus-per-task=2 --gres=gpu:2), not the node
        assert (n["CPU"], n["GPU"]) == (cpus, gpus), n
        # --mem=1G: Ray's memory + object store = the job's 1 GiB, not the machine's RAM
        assert abs(n["memory"] + n["object_store_memory"] - 2**30) < 2**30 * 0.02, n
    assert {t["ip"] for t in out["tasks"]} == ips, "one task on each node"
    assert {t["hostname"] for t in out["tasks"]} == hosts
    for t in out["tasks"]:
        # The task got one of the GPUs SLURM gave this job on its node (2 of the 4).
        node_gpus = t["node_gpus"].split(",")
        assert len(node_gpus) == gpus, t
        assert len(t["gpu_ids"]) == 1 and t["cuda_visible_devices"] == t["gpu_ids"][0]
        assert t["gpu_ids"][0] in node_gpus, t


@slurm
def test_three_node_cluster_forms_and_tears_down(cenv):
    workdir = SHARED / f"a-{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic()
    job = submit(cenv, workdir, "--selftest", srun="--kill-on-bad-exit=1")
    state, code = wait_done(cenv, job, 100)
    took = time.monotonic() - t0
    text = job_output(workdir, job)
    assert (state, code) == ("COMPLETED", "0:0"), text[-3000:]
    out = json.loads(re.search(r"^HPCTUNE_RAY (.*)$", text, re.M).group(1))
    check_selftest(out, cenv)
    assert "3/3 nodes joined" in text and text.count("ray stopped on") == 3
    info = head_info(workdir, job)
    assert stopped_nodes(info) == sorted(three_nodes(cenv))
    assert_torn_down(cenv, job, info)
    print(f"job {job}: 3/3 joined in {out['joined_s']:.1f} s after srun start; "
          f"whole job {took:.1f} s")


@slurm
def test_two_jobs_on_the_same_nodes_do_not_collide(cenv):
    dirs = [SHARED / f"b{i}-{uuid.uuid4().hex[:6]}" for i in (1, 2)]
    jobs = [submit(cenv, d, "--selftest --hold 60") for d in dirs]
    ups = [wait_for_line(d / f"slurm-{j}.out", "HPCTUNE_RAY_UP", 90, cenv, j)
           for d, j in zip(dirs, jobs, strict=True)]
    # Both clusters are up at the same time, on the same 3 nodes: release them together.
    for up in ups:
        Path(up["run_dir"], "release").touch()
    results = [wait_done(cenv, j, 60) for j in jobs]
    texts = [job_output(d, j) for d, j in zip(dirs, jobs, strict=True)]
    for (state, code), text in zip(results, texts, strict=True):
        assert (state, code) == ("COMPLETED", "0:0"), text[-3000:]
    outs = [json.loads(re.search(r"^HPCTUNE_RAY (.*)$", t, re.M).group(1)) for t in texts]
    for out in outs:
        check_selftest(out, cenv)
    assert outs[0]["address"] != outs[1]["address"]
    # Slurm gave the jobs different GPUs of each node (0,1 and 2,3); Ray hands out only those.
    per_node = [{t["ip"]: set(t["node_gpus"].split(",")) for t in o["tasks"]} for o in outs]
    for ip, ids in per_node[0].items():
        assert ids.isdisjoint(per_node[1][ip]), (ip, ids, per_node[1][ip])
    for d, j in zip(dirs, jobs, strict=True):
        assert_torn_down(cenv, j, head_info(d, j))
    print("two jobs at once: " + ", ".join(
        f"{j} at {o['address']} joined in {o['joined_s']:.1f} s" for j, o in zip(jobs, outs, strict=True)))


DRIVER = (
    "import ray, sys\n"
    "try:\n"
    "    ray.init(address=sys.argv[1], logging_level='ERROR')\n"
    "except Exception as e:\n"
    "    print('REFUSED', type(e).__name__, e); sys.exit(3)\n"
    "print('CONNECTED', len([n for n in ray.nodes() if n['Alive']]))\n"
)


@slurm
def test_driver_without_token_is_refused_and_workers_leave_with_the_head(cenv, tmp_path):
    workdir = SHARED / f"c-{uuid.uuid4().hex[:6]}"
    job = submit(cenv, workdir, "--selftest --hold 100")  # the head holds a live driver
    up = wait_for_line(workdir / f"slurm-{job}.out", "HPCTUNE_RAY_UP", 90, cenv, job)
    info = head_info(workdir, job)
    token = (info["run_dir"] / "token").read_text().strip()
    assert oct((info["run_dir"] / "token").stat().st_mode & 0o777) == "0o600"
    assert oct(info["run_dir"].stat().st_mode & 0o777) == "0o700"

    base = {k: v for k, v in cenv.items() if not k.startswith("RAY_")}
    base["HOME"] = str(tmp_path)  # no ~/.ray/auth_token to fall back on
    drivers = {
        "no token": base,
        "wrong token": {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64},
        "auth disabled": {**base, "RAY_AUTH_MODE": "disabled"},
        "right token": {**base, "RAY_AUTH_MODE": "token",
                        "RAY_AUTH_TOKEN_PATH": str(info["run_dir"] / "token")},
    }
    # Drivers run on the head's node (a driver needs a local raylet), as extra steps of the job.
    head_node = three_nodes(cenv)[0]
    procs = {
        name: subprocess.Popen(
            ["srun", f"--jobid={job}", "--overlap", "-N1", "-n1", f"-w{head_node}", "--quiet",
             PYTHON, "-c", DRIVER, up["address"]],
            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for name, env in drivers.items()
    }
    outs = {}
    for name, p in procs.items():
        try:
            outs[name] = (p.wait(timeout=75), p.stdout.read())
        except subprocess.TimeoutExpired:
            p.kill()
            outs[name] = (None, "timed out")
    rc, text = outs["right token"]
    assert rc == 0 and "CONNECTED 3" in text, f"driver with the token failed: {text[-3000:]}"
    for name in ("no token", "wrong token", "auth disabled"):
        rc, text = outs[name]
        assert rc != 0 and "CONNECTED" not in text, (name, text[-2000:])
        # Ray's GCS says why: "Unauthenticated: ... InvalidAuthToken: ... missing or incorrect"
        assert "InvalidAuthToken" in text or "Unauthenticated" in text, (name, text[-2000:])

    # The token is in no log or script: Slurm output, ray start logs, head.json, job script.
    for f in [*workdir.rglob("*"), *Path(cenv["HPCTUNE_SLURM_STATE"], "log").glob("*")]:
        if f.is_file() and f.name != "token":
            assert token not in f.read_text(errors="replace"), f

    # SIGTERM to the head's process only (a Ray driver is connected in it): it tears its node
    # down and writes `shutdown`; the worker ranks must notice and leave by themselves.
    t_kill = time.monotonic()
    os.kill(info["pid"], signal.SIGTERM)
    state, code = wait_done(cenv, job, 40)
    gone = time.monotonic() - t_kill
    text = job_output(workdir, job)
    assert stopped_nodes(info) == sorted(three_nodes(cenv)), text[-3000:]
    # ray.init() turned SIGTERM into sys.exit(15) here; Ray's C++ handler must not abort first.
    assert "SIGTERM received" not in text and "Aborted" not in text, text[-3000:]
    assert_torn_down(cenv, job, info)
    assert gone < 20, f"job took {gone:.1f} s to end after the head's SIGTERM"
    refusals = {n: [ln[:150] for ln in outs[n][1].splitlines() if ln.startswith("REFUSED")]
                for n in ("no token", "wrong token", "auth disabled")}
    print(f"refused: {refusals}; job ended {gone:.1f} s after SIGTERM to the head "
          f"({state} {code})")


# ---------------------------------------------------------------- without Slurm


def test_port_plan_pins_every_port_inside_its_slot():
    plan = PortPlan(20000)
    args = plan.ray_start_args(head=True, client_server=True)
    ports = [int(a.split("=")[1]) for a in args]
    assert len(set(ports)) == len(ports) and all(20000 <= p < 20000 + SLOT_SIZE for p in ports)
    flags = {a.split("=")[0] for a in args}
    assert {"--port", "--node-manager-port", "--object-manager-port", "--min-worker-port",
            "--max-worker-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
            "--runtime-env-agent-port", "--metrics-export-port", "--dashboard-port",
            "--ray-client-server-port"} <= flags
    worker = {a.split("=")[0] for a in plan.ray_start_args(head=False, client_server=True)}
    assert not worker & {"--port", "--dashboard-port", "--ray-client-server-port"}


def test_job_ids_in_a_row_get_different_slots_and_a_busy_slot_is_skipped():
    low, high = port_range()
    nslots = (high - low) // SLOT_SIZE
    assert nslots >= 8 and high <= 32768
    assert len({preferred_slot(f"{j}.0", nslots) for j in range(1000, 1000 + nslots)}) == nslots
    first = next(candidate_plans("123456.0"))
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", first.base + 42))  # e.g. another job's worker
        second = next(candidate_plans("123456.0"))
    assert second.base != first.base


def test_local_single_node_cluster_with_token_and_teardown_on_error(tmp_path):
    """A one-node 'allocation' on this machine: body gets a driver env; an exception in the
    body still stops this node's Ray and removes its temp dir and token."""
    alloc = Allocation(job_id=str(os.getpid()), nodes=("localhost",), node_rank=0, cpus=1,
                       step_id="t")
    probe = (
        "import ray; ray.init(logging_level='ERROR'); "
        "print(int(ray.cluster_resources()['CPU']))"
    )
    with pytest.raises(RuntimeError, match="boom"):
        with ray_cluster(alloc, tmp_path, timeout_s=90) as c:
            assert c.is_head and c.num_nodes == 1 and os.environ["RAY_ADDRESS"] == c.address
            out = subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True,
                                 timeout=60, env={**os.environ})
            assert out.stdout.strip() == "1", out.stderr[-2000:]
            assert leftover_processes(f"{alloc.job_id}.t") != []
            raise RuntimeError("boom")
    assert "RAY_ADDRESS" not in os.environ
    assert leftover_processes(f"{alloc.job_id}.t") == []
    assert not list(Path(tempfile.gettempdir()).glob(f"hpct-{alloc.job_id}.t.0*"))
    assert not (c.run_dir / "token").exists()


def test_outside_slurm_is_a_cluster_error(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_JOBID", raising=False)
    with pytest.raises(ClusterError, match="SLURM"):
        with ray_cluster(None, tmp_path):
            pass


def test_node_local_shared_dir_is_refused():
    alloc = Allocation(job_id="7", nodes=("localhost", "localhost"), node_rank=0, cpus=1)
    with pytest.raises(ClusterError, match="node-local"):
        with ray_cluster(alloc, "/tmp/not-shared"):
            pass


def test_stale_temp_dirs_of_dead_jobs_are_swept(tmp_path):
    dead, live, young = (tmp_path / f"hpct-{k}" for k in ("91.0.1", "92.0.1", "93.0.1"))
    for d in (dead, live, young):
        (d / "session_x").mkdir(parents=True)
    for d in (dead, live):
        os.utime(d, (time.time() - 600, time.time() - 600))
    # A live process of job 92 (as ray start would be), found by its marker variable. It says when it
    # runs: the kernel fills a new program's /proc environ after Popen may already have returned.
    proc = subprocess.Popen(["sh", "-c", "echo up; sleep 30"], stdout=subprocess.PIPE,
                            env={**os.environ, MARKER_VAR: "92.0.r0.1-abcd"})
    try:
        assert proc.stdout.readline() == b"up\n"
        assert sweep_stale_temp_dirs(tmp_path) == [dead]
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert not dead.exists() and live.exists() and young.exists()


HOLDER = """
import sys, time
from hpctune.raycluster.cluster import ray_cluster
from hpctune.slurm.allocation import Allocation
alloc = Allocation(job_id=sys.argv[2], nodes=("localhost",), node_rank=0, cpus=1, step_id="s")
with ray_cluster(alloc, sys.argv[1], timeout_s=90):
    import ray
    ray.init(logging_level="ERROR")  # a connected driver, as the search will have
    print("UP", flush=True)
    time.sleep(120)
"""


def test_sigterm_to_a_process_with_a_connected_driver_tears_down(tmp_path):
    job = str(os.getpid() + 1_000_000)
    p = subprocess.Popen([PYTHON, "-c", HOLDER, str(tmp_path), job], text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert p.stdout.readline().strip() == "UP"
        assert leftover_processes(f"{job}.s") != []
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode in (15, 143), out  # ray.init's handler exits with 15, ours with 143
    assert "SIGTERM received" not in out, out[-2000:]  # Ray's C++ handler did not abort us
    assert leftover_processes(f"{job}.s") == []
    assert not list(Path(tempfile.gettempdir()).glob(f"hpct-{job}.s.0*"))


def test_a_port_taken_after_the_check_falls_back_to_the_next_slot(tmp_path, monkeypatch):
    """Another process binds the GCS port between our check and Ray's bind: the head notices
    (the GCS cannot bind), and starts again in the next free slot."""
    import hpctune.raycluster.cluster as rc

    alloc = Allocation(job_id=str(os.getpid() + 2_000_000), nodes=("localhost",), node_rank=0,
                       cpus=1, step_id="p")
    plans = list(itertools.islice(candidate_plans(f"{alloc.job_id}.p"), 2))
    monkeypatch.setattr(rc, "candidate_plans", lambda key, skip=(): iter(plans))
    with socket.socket() as taker:
        taker.bind(("0.0.0.0", plans[0].gcs))
        taker.listen()
        with ray_cluster(alloc, tmp_path, timeout_s=120) as c:
            assert c.address.endswith(f":{plans[1].gcs}")
    log = next(tmp_path.glob("ray-*/ray-start.0.localhost.log")).read_text()
    assert "No address added" in log or "already in use" in log.lower()
