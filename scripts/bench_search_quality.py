"""Benchmark: how good a model each hyperparameter search finds, at equal budget, on data where it matters.

On the synthetic `hard_shapes` dataset (6 shape classes, clutter, textured background; see
scripts/hard_shapes.py) it runs, for every seed, these rows, each in its own fresh subprocess, one
after the other (never two at once):

  untuned              one `YOLO("yolov8n.yaml").train(epochs=E)` with Ultralytics' defaults
  ultralytics-genetic  `model.tune(iterations=T, epochs=E, use_ray=False)`: Ultralytics' own evolution,
                       trials one after the other, no early stopping
  ultralytics-ray      `model.tune(iterations=T, epochs=E, use_ray=True, grace_period=G)`: Ray Tune with
                       Ultralytics' defaults (Optuna TPE searcher, ASHA)
  hpctune-<alg>        `hpctune.tune(max_samples=T, epochs=E, grace_period=G, search_alg=<alg>)`, one row
                       per algorithm in --algs

Every row gets the same user arguments (imgsz, batch, workers=0, plots=False, seed) and otherwise keeps
its own defaults (search space, optimizer, threads, ASHA ranking), which is part of what is compared.
Each tool draws its own initial weights: untuned and hpctune build the model from the yaml with the
training seed, the genetic Tuner trains every iteration from a copy of the random weights its YOLO
object was built with (a fresh draw in every run). On this data that draw moves a run's best as much as
the search does. --shared-init removes it from the comparison: for each seed, one set of random weights
(drawn with that seed, saved as the genetic Tuner saves its copy) is every row's model.
The budget is equal: T trials of at most E epochs each (untuned: one trial). A seed sets every row's
training seed and hpctune's search; Ultralytics' searchers draw fresh randomness (unseeded mutation,
Optuna), so their spread over seeds also shows their own run-to-run variation.

"best" is the highest mAP50-95 the tool reports for any of its trials, whatever its own fitness
(untuned: best epoch; genetic: max over tune_results.ndjson, which holds each iteration's best.pt or
last epoch; ray: max over every reported epoch of every trial; hpctune: max of `result.best_metric`
and the table's per-trial best). Per row it prints the mean and min-max of best over the seeds,
epochs trained and wall seconds (whole subprocess: imports, Ray start, training) summed over the
seeds, then, for each hpctune row against each peer row over the seeds both ran: the ratio of mean best
and of wall time, on how many seeds hpctune was better, and the mean per-seed difference of best with its
standard error. All raw figures go to a JSON file (--out, by default results.json in the work folder,
printed at the end).

Everything lives in a fresh temporary work folder (dataset, runs, Ultralytics/matplotlib/W&B settings),
offline, so it runs from a fresh clone with no other state. CPU only.

    .venv/bin/python scripts/bench_search_quality.py [--trials 8] [--epochs 10] [--grace 3] [--seeds 0 1]
        [--imgsz 96] [--algs tpe evolve random] [--rows untuned ultralytics-genetic ...] [--shared-init]
        [--workdir DIR]
    .venv/bin/python scripts/bench_search_quality.py --merge A/results.json B/results.json [--out FILE]

--merge runs nothing: it prints one table of several runs of the same budget (say seeds 0-4, then 5-9).

With the defaults on 2 CPU cores an epoch takes 4-5 s; the three peer rows take ~27 min for three
seeds, each hpctune row about as long as ultralytics-ray (figures: README, "Search quality").
Training from scratch for 10 epochs is noisy on this data (one configuration scored 0.028-0.137 over
three training seeds): use more seeds before reading a difference between two searches as real.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # hpctune from this checkout
SCRIPTS = Path(__file__).resolve().parent
METRIC = "metrics/mAP50-95(B)"
PEERS = ("untuned", "ultralytics-genetic", "ultralytics-ray")
NO_EARLY_STOPS = ("untuned", "ultralytics-genetic")  # rows the grace period does not change
DEFAULT_ALGS = ("tpe", "evolve", "random")
MODEL = "yolov8n.yaml"  # built from yaml: no weights download


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


# ------------------------------------------------------------------------------------------- child side
# Each runner trains one row for one seed in the current (fresh) process and returns its raw figures.

def user_args(s: dict) -> dict:
    """What a user types on every side; each tool keeps its own defaults for everything else."""
    return {"imgsz": s["imgsz"], "batch": s["batch"], "workers": 0, "plots": False, "seed": s["seed"]}


def save_initial_weights(path: Path, seed: int) -> None:
    """Random weights of MODEL drawn with `seed`, saved whole or not at all, in half precision as
    Ultralytics saves a model (and the genetic Tuner its starting copy)."""
    import torch
    from ultralytics import YOLO

    torch.manual_seed(seed)
    partial = path.with_name(path.stem + ".partial.pt")
    YOLO(MODEL).save(partial)
    os.replace(partial, path)


def run_untuned(s: dict) -> dict:
    from ultralytics import YOLO

    model = YOLO(s["model"])
    final = model.train(data=s["data"], epochs=s["epochs"], device="cpu", project=s["rundir"], name="untuned",
                        **user_args(s))
    history = epoch_maps(Path(model.trainer.save_dir) / "results.csv")
    best = max([*history, final.results_dict[METRIC]])
    return {"best": best, "epochs": len(history), "trials": 1, "per_trial": [best], "history": history}


def epoch_maps(results_csv: Path) -> list[float]:
    with open(results_csv, newline="") as f:
        return [float(row[METRIC]) for row in csv.DictReader(f, skipinitialspace=True)]


def run_genetic(s: dict) -> dict:
    from ultralytics import YOLO

    YOLO(s["model"]).tune(data=s["data"], epochs=s["epochs"], iterations=s["trials"], use_ray=False, save=False,
                          val=True, device="cpu", project=s["rundir"], name="genetic", **user_args(s))
    (results,) = Path(s["rundir"]).rglob("tune_results.ndjson")
    records = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    # One record per iteration; its metrics are those of the iteration's best.pt, else its last epoch.
    per_trial = [max((m or {}).get(METRIC, 0.0) for m in r["datasets"].values()) for r in records]
    return {"best": max(per_trial), "epochs": len(records) * s["epochs"], "trials": len(records),
            "per_trial": per_trial, "fitness": [r["fitness"] for r in records]}


def run_ray(s: dict) -> dict:
    import ray
    from ultralytics import YOLO

    # A cluster of our own: never attach to a stale one left by another run.
    ray.init(address="local", num_cpus=cpu_count(), include_dashboard=False, log_to_driver=False)
    grid = YOLO(s["model"]).tune(data=s["data"], epochs=s["epochs"], iterations=s["trials"], use_ray=True,
                                 grace_period=s["grace"], gpu_per_trial=0, device="cpu", project=s["rundir"],
                                 name="ray", **user_args(s))
    per_trial, epochs = [], 0
    for result in grid:
        frame = result.metrics_dataframe
        reported = [] if frame is None or METRIC not in frame else [float(v) for v in frame[METRIC].dropna()]
        reported.append(float((result.metrics or {}).get(METRIC, 0.0)))
        per_trial.append(max(reported))
        # Ultralytics' final evaluation of best.pt reports "epoch" E + 1: count trained epochs only.
        if frame is not None and "epoch" in frame:
            epochs += len({int(e) for e in frame["epoch"].dropna() if e <= s["epochs"]})
    return {"best": max(per_trial), "epochs": epochs, "trials": len(grid), "per_trial": per_trial,
            "errors": sum(result.error is not None for result in grid)}


def run_hpctune(s: dict, alg: str) -> dict:
    import hpctune

    kwargs = {"model": s["model"], "data": s["data"], "max_samples": s["trials"], "epochs": s["epochs"],
              "grace_period": s["grace"], "seed": s["seed"], "storage": s["rundir"], "name": f"hpctune-{alg}",
              "imgsz": s["imgsz"], "batch": s["batch"], "workers": 0, "search_alg": alg}
    result = hpctune.tune(**kwargs)
    per_trial = [row["best_metric"] for row in result.table if row.get("best_metric") is not None]
    best = max([*per_trial, *([result.best_metric] if result.best_metric is not None else [])], default=None)
    return {"best": best, "best_metric": result.best_metric, "epochs": sum(row["epochs"] for row in result.table),
            "trials": len(result.table), "per_trial": per_trial, "baseline": result.baseline_metric,
            "run_dir": str(result.run_dir)}


def run_child(args) -> None:
    settings = {"data": args.data, "rundir": args.rundir, "trials": args.trials, "epochs": args.epochs,
                "grace": args.grace, "seed": args.seed, "imgsz": args.imgsz, "batch": args.batch,
                "model": args.model}
    start = time.perf_counter()
    if args.child == "init":
        save_initial_weights(Path(args.model), args.seed)
        return
    if args.child == "untuned":
        outcome = run_untuned(settings)
    elif args.child == "ultralytics-genetic":
        outcome = run_genetic(settings)
    elif args.child == "ultralytics-ray":
        outcome = run_ray(settings)
    else:
        outcome = run_hpctune(settings, args.child.removeprefix("hpctune-"))
    outcome["run_s"] = time.perf_counter() - start
    print("RESULT " + json.dumps(outcome, default=float), flush=True)


# ------------------------------------------------------------------------------------------ parent side

def prepare_env(workdir: Path) -> dict:
    """An environment that keeps every tool offline and its settings, caches and logs inside workdir."""
    config = workdir / "config"
    fonts = config / "ultralytics" / "Ultralytics"
    fonts.mkdir(parents=True, exist_ok=True)
    import matplotlib  # Ultralytics downloads Arial.ttf on every dataset check unless it is present

    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        shutil.copyfile(font, fonts / name)
    return {**os.environ,
            "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(config / "ultralytics"),
            "MPLCONFIGDIR": str(config / "matplotlib"), "WANDB_MODE": "disabled", "WANDB_SILENT": "true",
            "WANDB_DIR": str(config / "wandb"), "HF_HUB_OFFLINE": "1", "TORCH_HOME": str(config / "torch"),
            "XDG_CACHE_HOME": str(config / "cache"), "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def initial_weights(workdir: Path, seed: int, env: dict) -> Path:
    """The seed's shared initial weights (--shared-init), made once in a child process."""
    path = workdir / "init" / f"seed{seed}.pt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", "init", "--seed", str(seed),
                        "--model", str(path)], env=env, cwd=path.parent, check=True, capture_output=True)
    return path


def run_row(args, row: str, seed: int, data: Path, workdir: Path, env: dict) -> dict:
    rundir = workdir / "runs" / f"{row}-seed{seed}"
    rundir.mkdir(parents=True)
    model = initial_weights(workdir, seed, env) if args.shared_init else MODEL
    command = [sys.executable, str(Path(__file__).resolve()), "--child", row, "--seed", str(seed),
               "--data", str(data), "--rundir", str(rundir), "--trials", str(args.trials),
               "--epochs", str(args.epochs), "--grace", str(args.grace), "--imgsz", str(args.imgsz),
               "--batch", str(args.batch), "--model", str(model)]
    log = rundir / "output.log"
    start = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, text=True, env=env, cwd=rundir)
    wall = time.perf_counter() - start
    text = log.read_text(errors="replace")
    lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        return {"error": f"exit {done.returncode}; log {log}", "log_tail": text[-3000:], "wall_s": wall}
    return {**json.loads(lines[-1][len("RESULT "):]), "wall_s": wall}


def summarize(runs: dict[str, dict[int, dict]]) -> dict[str, dict]:
    """Per row over its successful seeds: mean/min/max best, total epochs and wall seconds."""
    summary = {}
    for row, by_seed in runs.items():
        ok = {seed: r for seed, r in by_seed.items() if "error" not in r and r.get("best") is not None}
        if not ok:
            continue
        bests = [r["best"] for r in ok.values()]
        summary[row] = {"seeds": sorted(ok), "best": {str(seed): r["best"] for seed, r in ok.items()},
                        "wall": {str(seed): r["wall_s"] for seed, r in ok.items()},
                        "best_mean": statistics.mean(bests), "best_min": min(bests), "best_max": max(bests),
                        "epochs": sum(r["epochs"] for r in ok.values()),
                        "wall_s": sum(r["wall_s"] for r in ok.values()),
                        "failed_seeds": sorted(set(by_seed) - set(ok))}
    return summary


def ratios(summary: dict[str, dict]) -> dict[str, dict[str, dict[str, float]]]:
    """For each hpctune row and each peer row, over the seeds both ran (the seed moves both rows: pairing
    removes part of that noise): hpctune / peer of mean best and of wall time, on how many seeds hpctune
    was better, and the mean per-seed difference of best with its standard error."""
    out = {}
    for row in (r for r in summary if r.startswith("hpctune-")):
        out[row] = {}
        for peer in (p for p in PEERS if p in summary):
            mine, theirs = summary[row], summary[peer]
            common = [seed for seed in mine["best"] if seed in theirs["best"]]
            if not common:
                continue
            diffs = [mine["best"][seed] - theirs["best"][seed] for seed in common]
            their_best = sum(theirs["best"][seed] for seed in common)
            out[row][peer] = {
                "best": sum(mine["best"][seed] for seed in common) / their_best if their_best > 0 else None,
                "wall": sum(mine["wall"][seed] for seed in common) / sum(theirs["wall"][seed] for seed in common),
                "paired_seeds": len(common), "better_on": sum(d > 0 for d in diffs),
                "diff_mean": statistics.mean(diffs),
                "diff_se": statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else None}
    return out


def make_report(settings: dict, runs: dict[str, dict[int, dict]]) -> dict:
    """Everything the results file holds: settings, raw runs, per-row summary, hpctune-to-peer ratios."""
    summary = summarize(runs)
    return {"settings": settings, "runs": runs, "summary": summary, "ratios": ratios(summary)}


def merge(paths: list[Path], rows: list[str] | None = None) -> tuple[dict, dict]:
    """The settings and runs (only `rows` if given) of several results files of one budget (their seeds
    joined, a later file's row and seed replacing an earlier one's); exits with one line if their budgets
    differ. The grace period counts only for files with a row that stops early: untuned and genetic runs
    join runs of any grace."""
    budget_keys = ("trials", "epochs", "imgsz", "batch", "n_train", "n_val", "model", "shared_init")
    settings: dict = {}
    grace = None
    runs: dict[str, dict[int, dict]] = {}
    for path in paths:
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            sys.exit(f"--merge: {path} cannot be read ({exc}): give results files this script wrote")
        report["runs"] = {row: by_seed for row, by_seed in report["runs"].items() if not rows or row in rows}
        report["settings"].setdefault("shared_init", False)  # files written before --shared-init
        budget = {key: report["settings"].get(key) for key in budget_keys}
        if settings and budget != {key: settings.get(key) for key in budget_keys}:
            sys.exit(f"--merge: {path} has another budget ({budget}): merge runs of one budget only")
        if set(report["runs"]) - set(NO_EARLY_STOPS):
            if grace not in (None, report["settings"]["grace"]):
                sys.exit(f"--merge: {path} has grace {report['settings']['grace']}, another file {grace}: "
                         "merge runs of one grace period only")
            grace = report["settings"]["grace"]
        settings = {**settings, **report["settings"],
                    "seeds": sorted({*settings.get("seeds", []), *report["settings"]["seeds"]})}
        for row, by_seed in report["runs"].items():
            runs.setdefault(row, {}).update({int(seed): outcome for seed, outcome in by_seed.items()})
    return {**settings, "grace": grace if grace is not None else settings["grace"],
            "merged_from": [str(p) for p in paths]}, runs


def write_results(path: Path, report: dict) -> None:
    """Replace the results file whole or not at all: a full disk must not leave half a file."""
    from hpctune.run.rundir import atomic_write_text

    atomic_write_text(path, json.dumps(report, indent=1, default=float))


def print_table(summary: dict[str, dict], table_ratios: dict) -> None:
    print(f"\n{'row':22s} {'best mAP50-95 mean':>18s} {'(min-max)':>15s}  {'per seed':24s} "
          f"{'epochs':>6s} {'wall s':>8s}")
    for row, s in summary.items():
        per_seed = " ".join(f"{v:.4f}" for v in s["best"].values())
        failed = f"  FAILED seeds {s['failed_seeds']}" if s["failed_seeds"] else ""
        print(f"{row:22s} {s['best_mean']:18.4f} {s['best_min']:7.4f}-{s['best_max']:.4f}  {per_seed:24s} "
              f"{s['epochs']:6d} {s['wall_s']:8.1f}{failed}")
    for row, peers in table_ratios.items():
        for peer, r in peers.items():
            se = "" if r["diff_se"] is None else f" +- {r['diff_se']:.4f}"
            print(f"{row:22s} vs {peer:20s} best {'n/a' if r['best'] is None else format(r['best'], '.2f') + 'x'}, "
                  f"wall {r['wall']:.2f}x; better on {r['better_on']} of {r['paired_seeds']} seeds, "
                  f"difference {r['diff_mean']:+.4f}{se}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="trials per search (T)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per trial at most (E)")
    parser.add_argument("--grace", type=int, default=3, help="ASHA grace period in epochs (G)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--imgsz", type=int, default=96)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--algs", nargs="+", default=list(DEFAULT_ALGS), help="hpctune search algorithms, one row each")
    parser.add_argument("--rows", nargs="+", help="run only these rows (default: the peers and every hpctune-<alg>)")
    parser.add_argument("--shared-init", action="store_true",
                        help="every row of a seed trains from the same random initial weights, drawn with the seed")
    parser.add_argument("--workdir", type=Path, help="work folder (default: a fresh temporary one)")
    parser.add_argument("--out", type=Path, help="JSON of all raw figures (default: WORKDIR/results.json)")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="RESULTS_JSON",
                        help="run nothing: print the table of these results files (one budget, seeds joined; "
                             "with --rows, those rows only)")
    # Dataset size (hidden: for the smoke test) and the child-process side.
    parser.add_argument("--n-train", type=int, default=384, help=argparse.SUPPRESS)
    parser.add_argument("--n-val", type=int, default=96, help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--rundir", help=argparse.SUPPRESS)
    parser.add_argument("--model", default=MODEL, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return
    if args.merge:
        report = make_report(*merge(args.merge, args.rows))
        settings = report["settings"]
        print(f"merged: {settings['trials']} trials x {settings['epochs']} epochs, "
              f"ASHA grace {settings['grace']}, seeds {settings['seeds']}")
        print_table(report["summary"], report["ratios"])
        if args.out:
            write_results(args.out, report)
        return

    all_rows = [*PEERS, *(f"hpctune-{alg}" for alg in args.algs)]
    rows = args.rows or all_rows
    unknown = [r for r in rows if r not in PEERS and not r.startswith("hpctune-")]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {all_rows}")
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="hpctune-search-quality-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    out = (args.out or workdir / "results.json").resolve()
    env = prepare_env(workdir)
    sys.path.insert(0, str(SCRIPTS))
    from hard_shapes import make_hard_dataset

    data = make_hard_dataset(workdir / "data", n_train=args.n_train, n_val=args.n_val, imgsz=args.imgsz, seed=0)
    settings = {"trials": args.trials, "epochs": args.epochs, "grace": args.grace, "seeds": args.seeds,
                "imgsz": args.imgsz, "batch": args.batch, "n_train": args.n_train, "n_val": args.n_val,
                "cpus": cpu_count(), "model": MODEL, "shared_init": args.shared_init, "data": str(data)}
    print(f"budget: {args.trials} trials x {args.epochs} epochs, ASHA grace {args.grace}, seeds {args.seeds}; "
          f"hard_shapes {args.n_train}+{args.n_val} images at {args.imgsz} px, batch {args.batch}; "
          f"{cpu_count()} CPUs; {'shared' if args.shared_init else 'each tool its own'} initial weights; "
          f"work folder {workdir}", flush=True)

    runs: dict[str, dict[int, dict]] = {}
    for row in rows:
        for seed in args.seeds:
            outcome = run_row(args, row, seed, data, workdir, env)
            runs.setdefault(row, {})[seed] = outcome
            if "error" in outcome:
                print(f"  {row:22s} seed {seed}: FAILED ({outcome['error']})\n{outcome['log_tail'][-1500:]}",
                      flush=True)
            else:
                extra = f"  baseline {outcome['baseline']}" if outcome.get("baseline") is not None else ""
                print(f"  {row:22s} seed {seed}: best {outcome['best']:.4f}  {outcome['trials']} trials  "
                      f"{outcome['epochs']} epochs  {outcome['wall_s']:.1f} s{extra}", flush=True)
            report = make_report(settings, runs)
            out.parent.mkdir(parents=True, exist_ok=True)
            write_results(out, report)

    print_table(report["summary"], report["ratios"])
    print(f"\nraw figures: {out}")
    failed = [f"{row} seed {seed}" for row, by_seed in runs.items() for seed, r in by_seed.items() if "error" in r]
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
