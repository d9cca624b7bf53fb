"""Benchmark: Ultralytics' own `model.tune(use_ray=True, search_alg=None)` against hpctune on the same
data, search space, budget (trials x epochs), ASHA settings and seed, one after the other in one run.

Prints each one's wall time, best metric and whether it delivered final (stripped, evaluated) weights,
and the wall-time ratio hpctune / Ultralytics. Each side runs in its own fresh process and Ray cluster.

    .venv/bin/python scripts/bench_vs_ultralytics.py [--trials 6] [--epochs 6] [--grace 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METRIC = "metrics/mAP50-95(B)"


def common(args) -> dict:
    from hpctune.demo import DEMO_SPACE, DEMO_TRAIN_ARGS

    # What a user would type on either side; each tool keeps its own defaults for the rest
    # (workers, plots), which is part of what is compared.
    train = {k: v for k, v in DEMO_TRAIN_ARGS.items() if k not in {"workers", "plots", "val"}}
    return {"train": train, "space": DEMO_SPACE, "epochs": args.epochs, "grace": args.grace,
            "trials": args.trials, "seed": args.seed}


def run_ultralytics(data: str, workdir: Path, settings: dict) -> dict:
    import numpy as np
    import ray
    import torch
    from ultralytics import YOLO

    np.random.seed(settings["seed"])  # Ray's random search draws from numpy's global generator
    ray.init(address="local", num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False, log_to_driver=False)
    from hpctune.space import to_ray_space

    grid = YOLO("yolov8n.yaml").tune(
        data=data, space=to_ray_space(settings["space"]), grace_period=settings["grace"], gpu_per_trial=0,
        iterations=settings["trials"], use_ray=True, search_alg=None, epochs=settings["epochs"], device="cpu",
        project=str(workdir), name="ultralytics", **settings["train"],
    )
    best = grid.get_best_result(METRIC, "max")
    # The best trial's own weights: stripped only if Ultralytics' final evaluation ran before Ray stopped it.
    suffix = best.metrics["trial_id"].split("_")[-1]
    weights = next(Path(workdir).rglob(f"*_{suffix}/weights/best.pt"), None)
    final = weights is not None and torch.load(weights, weights_only=False).get("optimizer") is None
    return {"best_metric": best.metrics.get(METRIC), "final_weights": final, "trials": len(grid),
            "epochs_trained": sum(r.metrics.get("training_iteration", 0) for r in grid)}


def run_hpctune(data: str, workdir: Path, settings: dict) -> dict:
    import torch

    import hpctune

    result = hpctune.tune(
        model="yolov8n.yaml", data=data, space=settings["space"], grace_period=settings["grace"], gpu_per_trial=0,
        max_samples=settings["trials"], epochs=settings["epochs"], seed=settings["seed"], storage=str(workdir),
        name="hpctune", **settings["train"],
    )
    final = result.best_weights is not None and torch.load(result.best_weights, weights_only=False)["optimizer"] is None
    return {"best_metric": result.best_metric, "final_weights": final, "trials": len(result.table),
            "epochs_trained": sum(row["epochs"] for row in result.table)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--grace", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one", choices=["ultralytics", "hpctune"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # child process: one side of the comparison
        runner = run_ultralytics if args.one == "ultralytics" else run_hpctune
        start = time.perf_counter()
        outcome = runner(args.data, Path(args.workdir), common(args))
        outcome["wall_s"] = time.perf_counter() - start
        print("RESULT " + json.dumps(outcome))
        return

    from hpctune.demo import DEMO_DATASET, make_demo_dataset

    workdir = Path(tempfile.mkdtemp(prefix="hpctune-bench-", dir=REPO / ".test-shared"))
    data = make_demo_dataset(workdir / "data", **DEMO_DATASET, seed=0)
    # Offline on both sides. Ultralytics keeps its default settings (its raytune callback reports each
    # epoch to ASHA); it only gets the font it would otherwise download. hpctune prepares its own.
    fonts = workdir / "ultralytics-config" / "Ultralytics"
    fonts.mkdir(parents=True)
    from hpctune.offline import _install_fonts

    _install_fonts(fonts)
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(workdir / "ultralytics-config")}
    outcomes = {}
    for side in ("ultralytics", "hpctune"):
        command = [sys.executable, __file__, "--one", side, "--data", str(data), "--workdir", str(workdir / side),
                   "--trials", str(args.trials), "--epochs", str(args.epochs), "--grace", str(args.grace),
                   "--seed", str(args.seed)]
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=workdir)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            sys.exit(f"{side} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        outcomes[side] = json.loads(lines[-1][len("RESULT "):])
    print(f"budget: {args.trials} trials x {args.epochs} epochs, ASHA grace {args.grace}, rf 3, seed {args.seed}, "
          f"{len(os.sched_getaffinity(0))} CPUs, {DEMO_DATASET}")
    for side, o in outcomes.items():
        delivered = "yes" if o["final_weights"] else "no"
        print(f"{side:12s} wall {o['wall_s']:7.1f} s  best {METRIC} {o['best_metric']:.4f}  "
              f"epochs trained {o['epochs_trained']:3d}  final weights delivered: {delivered}")
    ratio = outcomes["hpctune"]["wall_s"] / outcomes["ultralytics"]["wall_s"]
    print(f"wall-time ratio hpctune / ultralytics: {ratio:.2f}x (target <= 0.80x at an equal or better best metric)")


if __name__ == "__main__":
    main()
