#!/usr/bin/env python
"""Time from job start to all N nodes joined: hpctune.raycluster.cluster against Ray's documented
SLURM recipe (``slurm-basic.sh``: head started, ``sleep 10``, then each worker started
followed by ``sleep 5``), for N = 2 and 3, on the local Slurm cluster
(scripts/slurm-cluster-up.sh).

    .venv/bin/python scripts/bench_ray_bringup.py [--nodes 2 3] [--repeat 1]

Both kinds of job get the same allocation (``--ntasks-per-node=1 --cpus-per-task=2
--gres=gpu:2 --mem=1G``) and token auth. Figures, both measured from the first line of the batch script:
  hpctune  when ``ray_cluster`` reports all N nodes joined (its body, the driver, starts then);
  recipe   ready: when the recipe's script reaches its driver (after the sleeps);
           joined: when all N nodes are alive in its GCS (a poller, for reference).
The ratio is hpctune / recipe ready. Target: <= 0.5 and hpctune < 10 s for N = 3.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from local_slurm_env import ENV_FILE, cluster_env

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
RAY = str(Path(PY).parent / "ray")

# Polls the GCS at $1 until $2 nodes are alive; prints BENCH_JOINED <epoch seconds>.
POLLER = r"""
import sys, time
from ray._raylet import GcsClient
from ray.core.generated import gcs_pb2
addr, want = sys.argv[1], int(sys.argv[2])
client = None
while True:
    try:
        client = client or GcsClient(address=addr)
        alive = [i for i in client.get_all_node_info(timeout=1).values()
                 if i.state == gcs_pb2.GcsNodeInfo.ALIVE]
        if len(alive) >= want:
            print("BENCH_JOINED %.3f" % time.time(), flush=True)
            break
    except Exception:
        pass
    time.sleep(0.1)
"""

HPCTUNE_JOB = """#!/bin/bash
echo "BENCH_T0 $(date +%s.%N)"
export PYTHONPATH={repo}
srun --ntasks-per-node=1 {py} -m hpctune.raycluster.selftest --shared-dir {work} --timeout 60
"""

# Ray docs, cluster/vms/user-guides/community/slurm-basic.sh, with the same allocation,
# token auth (as hpctune) and a job-specific port (so it cannot meet another job's 6379).
RECIPE_JOB = """#!/bin/bash
echo "BENCH_T0 $(date +%s.%N)"
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={work}/token RAY_USAGE_STATS_ENABLED=0
nodes=$(scontrol show hostnames "$SLURM_JOB_NODELIST")
nodes_array=($nodes)
head_node=${{nodes_array[0]}}
head_node_ip=$(srun --nodes=1 --ntasks=1 -w "$head_node" hostname --ip-address)
port=$((6400 + SLURM_JOB_ID % 500))
ip_head=$head_node_ip:$port
{py} -c '{poller}' "$ip_head" "$SLURM_JOB_NUM_NODES" &
poller=$!
echo "Starting HEAD at $head_node"
srun --nodes=1 --ntasks=1 -w "$head_node" \\
    {ray} start --head --node-ip-address="$head_node_ip" --port=$port \\
    --num-cpus "${{SLURM_CPUS_PER_TASK}}" --num-gpus 2 --block &
sleep 10
worker_num=$((SLURM_JOB_NUM_NODES - 1))
for ((i = 1; i <= worker_num; i++)); do
    node_i=${{nodes_array[$i]}}
    echo "Starting WORKER $i at $node_i"
    srun --nodes=1 --ntasks=1 -w "$node_i" \\
        {ray} start --address "$ip_head" \\
        --num-cpus "${{SLURM_CPUS_PER_TASK}}" --num-gpus 2 --block &
    sleep 5
done
echo "BENCH_READY $(date +%s.%N)"
timeout 60 tail --pid=$poller -f /dev/null
"""


class Preempted(Exception):
    """Another job took the nodes (a shared test cluster): run this one again."""


def run_job(env, kind: str, n: int, root: Path, partition: str | None = None) -> dict:
    work = root / f"{kind}-n{n}-{uuid.uuid4().hex[:6]}"
    work.mkdir(parents=True)
    if kind == "recipe":
        token = work / "token"
        token.write_text(uuid.uuid4().hex + uuid.uuid4().hex)
        token.chmod(0o600)
        text = RECIPE_JOB.format(work=work, py=PY, ray=RAY, poller=POLLER)
    else:
        text = HPCTUNE_JOB.format(work=work, py=PY, repo=REPO)
    (work / "job.sh").write_text(text)
    nodelist = f"n[1-{n}]" if n > 1 else "n1"
    cmd = ["sbatch", "--parsable", f"-N{n}", "--ntasks-per-node=1", "--cpus-per-task=2",
           "--gres=gpu:2", "--mem=1G", "-t", "3", f"-w{nodelist}", f"--chdir={REPO}",
           f"--output={work}/out.txt", f"--job-name=bench-{kind}",
           *([f"--partition={partition}"] if partition else []), str(work / "job.sh")]
    job = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.strip()
    end = time.monotonic() + 150
    while subprocess.run(["squeue", "-h", "-j", job], env=env, capture_output=True,
                         text=True).stdout.strip():
        if time.monotonic() > end:
            subprocess.run(["scancel", job], env=env)
            raise SystemExit(f"{kind} job {job} (N={n}) did not finish in 150 s; see {work}")
        time.sleep(0.5)
    (work / "token").unlink(missing_ok=True)  # the recipe's cluster is gone: no secret left behind
    out = (work / "out.txt").read_text(errors="replace")
    cancelled = "CANCELLED AT" in out or "PREEMPT" in out  # (the recipe's steps end cancelled)
    t0 = float(re.search(r"^BENCH_T0 (\S+)", out, re.M).group(1))
    res = {"job": job, "work": str(work)}
    if kind == "hpctune":
        m = re.search(r"^HPCTUNE_RAY_UP (.*)$", out, re.M)
        if not m:
            if cancelled:
                raise Preempted(job)
            raise SystemExit(f"hpctune job {job} did not come up:\n{out[-2000:]}")
        res["ready"] = json.loads(m.group(1))["joined_at"] - t0
    else:
        ready = re.search(r"^BENCH_READY (\S+)", out, re.M)
        joined = re.search(r"^BENCH_JOINED (\S+)", out, re.M)
        if not (ready and joined):
            if cancelled:
                raise Preempted(job)
            raise SystemExit(f"recipe job {job} did not come up:\n{out[-2000:]}")
        res["joined"] = float(joined.group(1)) - t0
        res["ready"] = max(float(ready.group(1)), float(joined.group(1))) - t0
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--nodes", type=int, nargs="+", default=[2, 3])
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--dir", type=Path, default=REPO / ".test-shared" / "bench-ray")
    p.add_argument("--partition", help="SLURM partition (default: the cluster's default)")
    args = p.parse_args()
    if not ENV_FILE.exists():
        print(f"local Slurm cluster not up ({ENV_FILE} absent): run scripts/slurm-cluster-up.sh")
        return 2
    env = cluster_env()
    rows = []
    for n in args.nodes:
        runs = {"hpctune": [], "recipe": []}
        for _ in range(args.repeat):
            for kind in ("hpctune", "recipe"):
                for _attempt in range(3):
                    try:
                        r = run_job(env, kind, n, args.dir, args.partition)
                        break
                    except Preempted as e:
                        print(f"N={n} {kind:8s} job {e} was preempted or cancelled: again", flush=True)
                else:
                    raise SystemExit(f"{kind} N={n}: preempted 3 times; is the cluster busy?")
                runs[kind].append(r)
                extra = f", all joined at {r['joined']:.1f} s" if "joined" in r else ""
                print(f"N={n} {kind:8s} job {r['job']}: ready {r['ready']:.1f} s{extra}",
                      flush=True)
        h = statistics.median(r["ready"] for r in runs["hpctune"])
        rr = statistics.median(r["ready"] for r in runs["recipe"])
        rj = statistics.median(r["joined"] for r in runs["recipe"])
        rows.append((n, h, rr, rj))
    print("\nnodes  hpctune [s]  recipe ready [s]  recipe joined [s]  hpctune/recipe")
    for n, h, rr, rj in rows:
        print(f"{n:5d}  {h:11.1f}  {rr:16.1f}  {rj:17.1f}  {h / rr:14.2f}")
    ok = all(h / rr <= 0.5 for _, h, rr, _ in rows) and all(h < 10 for n, h, _, _ in rows if n == 3)
    print("target (<= 0.5x the recipe, < 10 s for N = 3):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
