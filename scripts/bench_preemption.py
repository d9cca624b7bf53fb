#!/usr/bin/env python
"""What preemption costs: one search preempted k times by a high-priority job against the same
search (same seed, same configurations: the random searcher, whose suggestion n depends on the seed
and n alone, the first one the baseline) left alone, on the local Slurm cluster
(scripts/slurm-cluster-up.sh).

    .venv/bin/python scripts/bench_preemption.py [--preemptions 2] [--trials 4] [--epochs 3] [--nodes 2]

Each preemption is a 1-node `--exclusive` job in the high partition on the node of the search's
Ray head, submitted once the current run of the job has trained an epoch. Figures:
  epochs trained   epoch records written (each epoch a trial completed; a lost epoch has none)
  epochs lost      per preemption, the epochs in flight that the stop cut (one per running trial,
                   from the job's events); an epoch trained twice would be a second loss (target: 0)
  wall time        first job start to the last run's end (sacct), and the overhead against the baseline
  resume latency   each restart's start (sacct) to the first epoch a resumed trial finished
                   (includes that epoch: --epochs and the data size set it); target <= 30 s here
Prints one JSON object (also written to --out).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from local_slurm_env import ENV_FILE, cluster_env

REPO = Path(__file__).resolve().parents[1]


def sh(args: list[str], env, check: bool = True) -> str:
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    if check and out.returncode != 0:
        sys.exit(f"{shlex.join(args)} failed: {out.stderr[-2000:]}")
    return out.stdout


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def records(run_dir: Path) -> dict[str, list[dict]]:
    return {p.parent.name: jsonl(p) for p in (run_dir / "trials").glob("*/epochs.jsonl")}


def wait(condition, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    sys.exit(f"timed out waiting for {what}")


def sacct_runs(job: str, env) -> list[dict[str, str]]:
    fields = ["State", "Start", "End"]
    out = sh(["sacct", "-n", "-X", "-P", "-D", "-j", job, "-o", ",".join(fields)], env)
    return [dict(zip(fields, line.split("|"), strict=True)) for line in out.strip().splitlines()]


def stamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timestamp()


def run_search(args, env, name: str, preemptions: int) -> dict:
    space = Path(args.storage) / "space.yaml"
    space.write_text("lr0: {loguniform: [1.0e-4, 1.0e-1]}\n")
    out = sh([sys.executable, "-m", "hpctune", "submit", "model=yolov8n.yaml", f"data={args.data}",
              f"epochs={args.epochs}", "imgsz=64", "batch=16", "--space", str(space), "--search", "random",
              "--seed", str(args.seed),
              "--max-samples", str(args.trials), "--grace-period", "1", "--reduction-factor", "2",
              "--nodes", str(args.nodes), "--cpus-per-node", "1", "--time", "0-00:30:00",
              "--storage", args.storage, "--name", name], env)
    job = re.search(r"submitted job (\d+)", out).group(1)
    run_dir = Path(args.storage) / name
    events = run_dir / "slurm" / "events.jsonl"

    def started(restart: int):
        return next((e for e in jsonl(events) if e["event"] == "started" and e["restart"] == restart), None)

    for k in range(preemptions):
        start = wait(lambda k=k: started(k), 600, f"run {k} of job {job}")

        def trained(session=k + 1):
            found = records(run_dir)
            mine = [r for rs in found.values() for r in rs if r["session"] == session and not r.get("final")]
            return mine and not all(any(r.get("final") for r in rs) for rs in found.values())
        wait(trained, 600, f"an epoch in run {k}")
        sh(["sbatch", "-p", env["HPCTUNE_SLURM_HIGH_PARTITION"], "-N1", f"-w{start['nodes'][0]}", "--exclusive",
            "-o", "/dev/null", "--job-name=bench-preemptor", "--wrap", "sleep 30"], env)
        wait(lambda k=k: started(k + 1), 600, f"the restart after preemption {k + 1}")
    wait(lambda: not sh(["squeue", "-h", "-j", job], env, check=False).strip(), 1800, f"job {job} to end")
    runs = wait(lambda: (lambda rs: rs if rs and rs[-1]["End"] not in {"Unknown", ""} else None)(sacct_runs(job, env)),
                60, "sacct")
    found = records(run_dir)
    entries = jsonl(events)
    trained_epochs = sum(1 for rs in found.values() for r in rs if not r.get("final"))
    lost = [e["in_flight"] for e in entries if e["event"] == "interrupted"]
    latencies = []
    for run, start in zip(runs[1:], [e for e in entries if e["event"] == "started"][1:], strict=False):
        t0 = stamp(run["Start"])
        resumed = [r["time"] for rs in found.values() if any(r["time"] < t0 for r in rs) for r in rs
                   if r["time"] >= t0]
        latencies.append({"from_job_start_s": round(min(resumed) - t0, 1) if resumed else None,
                          "from_hpctune_entry_s": round(min(resumed) - start["entered"], 1) if resumed else None,
                          "ray_joined_s": round(start["joined_s"], 1)})
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "job": job, "finished": summary["finished"], "trials": summary["trials"],
        "runs": [r["State"] for r in runs],
        "wall_s": round(stamp(runs[-1]["End"]) - stamp(runs[0]["Start"]), 1),
        "epochs_trained": trained_epochs,
        "epochs_lost_per_preemption": [len(x) for x in lost],
        # An epoch trained twice would mean a trial lost more than the epoch in flight.
        "epochs_trained_twice": sum(len(e) - len(set(e)) for e in (
            [r["epoch"] for r in rs if not r.get("final")] for rs in found.values())),
        "resume_latency": latencies,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preemptions", type=int, default=2)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--storage", default=str(REPO / ".test-shared" / "bench-preemption" / str(int(time.time()))))
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    if not ENV_FILE.exists():
        sys.exit(f"the local Slurm cluster is not up ({ENV_FILE} absent): run scripts/slurm-cluster-up.sh")
    sys.path.insert(0, str(REPO))
    from hpctune.yolo.demo import make_demo_dataset

    Path(args.storage).mkdir(parents=True, exist_ok=True)
    args.data = str(make_demo_dataset(REPO / ".test-shared" / "data" / "tiny", n_train=64, n_val=32, imgsz=64,
                                      seed=0))
    env = cluster_env()
    env["HPCTUNE_FORCE_CPU"] = "1"
    # The CLI and the job (sbatch passes this environment on) run this checkout's hpctune.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    baseline = run_search(args, env, "baseline", 0)
    preempted = run_search(args, env, "preempted", args.preemptions)
    lost = preempted["epochs_lost_per_preemption"]
    result = {
        "settings": {k: getattr(args, k) for k in ("preemptions", "trials", "epochs", "nodes", "seed")},
        "baseline": baseline, "preempted": preempted,
        "extra_epochs_trained": preempted["epochs_trained"] - baseline["epochs_trained"],
        "epochs_lost_per_preemption_mean": round(sum(lost) / len(lost), 2) if lost else 0,
        "wall_overhead_s": round(preempted["wall_s"] - baseline["wall_s"], 1),
        "wall_overhead_pct": round(100 * (preempted["wall_s"] / baseline["wall_s"] - 1), 1),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
