"""Benchmark: Ultralytics' own `model.tune(use_ray=True, search_alg=None)` against hpctune on the same
data, search space, budget (trials x epochs), ASHA settings and seed, one after the other in one run.

Both sides train the same configurations: hpctune runs first, with its random searcher
(`search_alg="random"`; its first trial is the baseline, Ultralytics' defaults for the searched keys),
and Ultralytics' random search is then handed the configurations hpctune recorded in
RUN_DIR/suggestions.jsonl, in the order they were suggested, trial by trial, so that the comparison
is of the tools and not of two different random draws; the script checks that both trained the same
list. Each side keeps its own defaults for everything a user would not type (workers, plots, actor
reuse, how ASHA ranks trials), which is part of what is compared. Each side runs in its own fresh
process and Ray cluster, with this checkout's hpctune (PYTHONPATH).

Prints, per seed and in total: each side's wall time, epochs trained, seconds per epoch trained,
best metric and whether it delivered final (stripped, evaluated) weights of its best trial, and
the wall-time ratio hpctune / Ultralytics.

    .venv/bin/python scripts/bench_vs_ultralytics.py [--trials 9] [--epochs 9] [--grace 3] [--seeds 0 1]
        [--workdir DIR]     # data and both sides' runs; default: a new temp dir, kept for inspection
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's hpctune, not the one the venv's editable install names
METRIC = "metrics/mAP50-95(B)"


def common(args) -> dict:
    from hpctune.yolo.demo import DEMO_SPACE, DEMO_TRAIN_ARGS

    # What a user would type on either side; each tool keeps its own defaults for the rest.
    train = {k: v for k, v in DEMO_TRAIN_ARGS.items() if k not in {"workers", "plots", "val"}}
    return {"train": train, "space": DEMO_SPACE, "keys": list(DEMO_SPACE), "epochs": args.epochs,
            "grace": args.grace, "trials": args.trials, "seed": args.seed,
            # Ultralytics' side: hpctune's suggestions, in order (written by the parent process)
            "configs": json.loads(Path(args.configs).read_text()) if args.configs else None}


def suggested_configs(run_dir: Path, keys: list[str]) -> list[dict]:
    """The configurations hpctune's searcher suggested, from RUN_DIR/suggestions.jsonl in the order of "n"."""
    from hpctune.run.journal import read_journal

    entries = sorted(read_journal(run_dir / "suggestions.jsonl").values(), key=lambda e: e["n"])
    return [{k: e["config"][k] for k in keys} for e in entries]


def listed_space(configs: list[dict]) -> dict:
    """A Ray param_space whose n-th trial gets configs[n] (Ray resolves one trial at a time, in order)."""
    from ray import tune

    def nth(key: str):
        counter = itertools.count()
        return tune.sample_from(lambda _spec: configs[next(counter)][key])

    return {key: nth(key) for key in configs[0]}


def run_ultralytics(data: str, workdir: Path, settings: dict) -> dict:
    import ray
    import torch
    from ultralytics import YOLO

    ray.init(address="local", num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False, log_to_driver=False)
    grid = YOLO("yolov8n.yaml").tune(
        data=data, space=listed_space(settings["configs"]), grace_period=settings["grace"], gpu_per_trial=0,
        iterations=settings["trials"], use_ray=True, search_alg=None, epochs=settings["epochs"], device="cpu",
        project=str(workdir), name="ultralytics", **settings["train"],
    )
    best = grid.get_best_result(METRIC, "max")
    # The best trial's own weights: stripped only if Ultralytics' final evaluation ran before Ray stopped it.
    suffix = best.metrics["trial_id"].split("_")[-1]
    weights = next(Path(workdir).rglob(f"*_{suffix}/weights/best.pt"), None)
    final = weights is not None and torch.load(weights, weights_only=False).get("optimizer") is None
    keys = settings["keys"]
    return {"best_metric": best.metrics.get(METRIC), "final_weights": final, "trials": len(grid),
            "epochs_trained": sum(r.metrics.get("epoch", 0) for r in grid),
            "configs": [{k: r.config[k] for k in keys} for r in grid]}


def run_hpctune(data: str, workdir: Path, settings: dict) -> dict:
    import torch

    import hpctune

    result = hpctune.tune(
        model="yolov8n.yaml", data=data, space=settings["space"], grace_period=settings["grace"], gpu_per_trial=0,
        max_samples=settings["trials"], epochs=settings["epochs"], seed=settings["seed"], storage=str(workdir),
        name="hpctune", search_alg="random", **settings["train"],
    )
    final = result.best_weights is not None and torch.load(result.best_weights, weights_only=False)["optimizer"] is None
    keys = settings["keys"]
    return {"best_metric": result.best_metric, "final_weights": final, "trials": len(result.table),
            "epochs_trained": sum(row["epochs"] for row in result.table),
            "configs": [{k: row[f"config/{k}"] for k in keys} for row in result.table],
            "suggested": suggested_configs(Path(result.run_dir), keys)}


def same_configs(a: list[dict], b: list[dict]) -> bool:
    def canonical(configs):
        return sorted(json.dumps({k: round(v, 12) if isinstance(v, float) else v for k, v in c.items()},
                                 sort_keys=True) for c in configs)

    return canonical(a) == canonical(b)


def run_pair(args, seed: int, env: dict, workdir: Path, data: Path) -> dict:
    """hpctune first; then Ultralytics, handed hpctune's suggestions (in order) as its trials' configurations."""
    outcomes = {}
    configs = workdir / f"configs-seed{seed}.json"
    for side in ("hpctune", "ultralytics"):
        command = [sys.executable, str(Path(__file__).resolve()), "--one", side, "--data", str(data), "--workdir",
                   str(workdir / f"{side}-seed{seed}"), "--trials", str(args.trials), "--epochs", str(args.epochs),
                   "--grace", str(args.grace), "--seed", str(seed),
                   *(["--configs", str(configs)] if side == "ultralytics" else [])]
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=workdir)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            sys.exit(f"{side} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        outcomes[side] = json.loads(lines[-1][len("RESULT "):])
        if side == "hpctune":
            suggested = outcomes[side].pop("suggested")
            if len(suggested) != args.trials:
                sys.exit(f"hpctune recorded {len(suggested)} suggestions for {args.trials} trials")
            configs.write_text(json.dumps(suggested))
    return outcomes


def print_pair(label: str, outcomes: dict) -> None:
    for side, o in outcomes.items():
        delivered = "yes" if o["final_weights"] else "no"
        print(f"  {label:8s} {side:12s} wall {o['wall_s']:7.1f} s  epochs {o['epochs_trained']:3d} "
              f"({o['wall_s'] / max(1, o['epochs_trained']):5.2f} s each)  best {o['best_metric']:.4f}  "
              f"final weights: {delivered}")
    ratio = outcomes["hpctune"]["wall_s"] / outcomes["ultralytics"]["wall_s"]
    same = same_configs(outcomes["hpctune"]["configs"], outcomes["ultralytics"]["configs"])
    print(f"  {label:8s} ratio hpctune / ultralytics {ratio:.2f}x; same configurations trained: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=9)
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--grace", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--one", choices=["ultralytics", "hpctune"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--workdir",
                        help="a new or empty folder for the data and both sides' runs (default: a new temp dir)")
    parser.add_argument("--configs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # child process: one side of the comparison
        runner = run_ultralytics if args.one == "ultralytics" else run_hpctune
        start = time.perf_counter()
        outcome = runner(args.data, Path(args.workdir), common(args))
        outcome["wall_s"] = time.perf_counter() - start
        print("RESULT " + json.dumps(outcome))
        return

    from hpctune.yolo.demo import DEMO_DATASET, make_demo_dataset

    if args.workdir:
        workdir = Path(args.workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="hpctune-bench-"))
    data = make_demo_dataset(workdir / "data", **DEMO_DATASET, seed=0)
    # Offline on both sides. Ultralytics keeps its default settings (its raytune callback reports each
    # epoch to ASHA); it only gets the font it would otherwise download. hpctune prepares its own.
    fonts = workdir / "ultralytics-config" / "Ultralytics"
    fonts.mkdir(parents=True, exist_ok=True)
    from hpctune.yolo.offline import _install_fonts

    _install_fonts(fonts)
    # The children and their Ray workers import hpctune from this checkout too.
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(workdir / "ultralytics-config"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    print(f"work folder {workdir}", flush=True)
    print(f"budget: {args.trials} trials x {args.epochs} epochs, ASHA grace {args.grace}, rf 3, seeds {args.seeds}, "
          f"{len(os.sched_getaffinity(0))} CPUs, {DEMO_DATASET}", flush=True)
    pairs = {}
    for seed in args.seeds:
        pairs[seed] = run_pair(args, seed, env, workdir, data)
        print_pair(f"seed {seed}", pairs[seed])
        sys.stdout.flush()
    totals = {side: sum(p[side]["wall_s"] for p in pairs.values()) for side in ("ultralytics", "hpctune")}
    epochs = {side: sum(p[side]["epochs_trained"] for p in pairs.values()) for side in totals}
    not_worse = sum(p["hpctune"]["best_metric"] >= p["ultralytics"]["best_metric"] for p in pairs.values())
    print(f"all seeds: ultralytics {totals['ultralytics']:.1f} s / {epochs['ultralytics']} epochs, "
          f"hpctune {totals['hpctune']:.1f} s / {epochs['hpctune']} epochs; "
          f"wall-time ratio {totals['hpctune'] / totals['ultralytics']:.2f}x (target <= 0.80x); "
          f"hpctune's best metric equal or better in {not_worse}/{len(pairs)} seeds")


if __name__ == "__main__":
    main()
