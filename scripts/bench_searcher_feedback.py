"""How should a searcher learn from trials that ASHA stopped early? Measured on a synthetic
multi-fidelity objective, with hpctune's real ASHA scheduler and real searchers, no training.

Each configuration has a final quality q (best near lr0 = 1e-3, momentum 0.9) and a learning speed
tau; some good configurations are slow starters, so an early rung does not always rank like the
end. The metric at epoch e is q * (1 - exp(-e / tau)) + noise. Trials run `--concurrency` at a
time under ASHA (max `--epochs`, grace 3, reduction 3); each seed gets the same noise for every
searcher. Compared: TPE told PRUNED for a trial ASHA stopped (hpctune's default), TPE told COMPLETE
with the stopped trial's last value (what Ray's OptunaSearch does), evolve, random.

    .venv/bin/python scripts/bench_searcher_feedback.py [--trials 40] [--seeds 20]

Prints per searcher: the mean final quality q of the best fully trained trial, and how often it
beats each other treatment.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hpctune.engine.asha import SCORE, make_scheduler  # noqa: E402
from hpctune.engine.searchers import make_searcher  # noqa: E402

SPACE = {"lr0": {"loguniform": [1e-5, 1e-1]}, "momentum": {"uniform": [0.6, 0.98]},
         "weight_decay": {"uniform": [0.0, 0.001]}, "mosaic": {"uniform": [0.0, 1.0]}}
BASELINE = {"lr0": 0.01, "momentum": 0.937, "weight_decay": 0.0005, "mosaic": 1.0}
VARIANTS = {"tpe (pruned)": ("tpe", "pruned"), "tpe (complete)": ("tpe", "complete"),
            "evolve": ("evolve", "pruned"), "random": ("random", "pruned")}


def quality(config: dict) -> tuple[float, float]:
    """(final quality, learning time constant in epochs) of a configuration."""
    d = math.hypot((math.log10(config["lr0"]) + 3) / 2, (config["momentum"] - 0.9) / 0.2)
    q = 0.7 * math.exp(-d * d) + 0.05 * (1 - config["mosaic"]) * math.exp(-d * d)
    tau = 2.0 + 10.0 * config["mosaic"] * (1 - config["lr0"] ** 0.1)  # mosaic: slower start, no worse end
    return q, tau


def run(name: str, stopped_as: str, seed: int, trials: int, epochs: int, concurrency: int) -> float:
    searcher = make_searcher(name, space=SPACE, metric="m", max_epochs=epochs, seed=seed, baseline=BASELINE,
                             stopped_as=stopped_as)
    asha = make_scheduler(epochs=epochs, grace_period=3, reduction_factor=3)
    noise = np.random.default_rng(seed)
    running: list[list] = []
    started, best = 0, 0.0
    while started < trials or running:
        if len(running) < concurrency and started < trials:
            trial_id = f"t{started:04d}"
            config = searcher.suggest(trial_id)
            running.append([trial_id, config, 0, *quality(config)])
            started += 1
            continue
        trial = running.pop(0)
        trial[2] += 1
        trial_id, config, epoch, q, tau = trial
        value = q * (1 - math.exp(-epoch / tau)) + 0.005 * noise.standard_normal()
        result = {"m": value, "epoch": epoch, SCORE: value}
        action = asha.on_trial_result(None, SimpleNamespace(trial_id=trial_id), result)
        if action == "STOP" or epoch >= epochs:
            searcher.on_trial_complete(trial_id, result)
            if epoch >= epochs:
                best = max(best, q)
        else:
            searcher.on_trial_result(trial_id, result)
            running.append(trial)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=27)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args()
    scores = {v: [run(*VARIANTS[v], s, args.trials, args.epochs, args.concurrency) for s in range(args.seeds)]
              for v in VARIANTS}
    print(f"{args.trials} trials, {args.epochs} epochs, ASHA grace 3 rf 3, {args.concurrency} at once, "
          f"{args.seeds} seeds; best fully trained quality (optimum 0.75)")
    for variant, values in scores.items():
        wins = ", ".join(f"beats {o} {sum(a > b for a, b in zip(values, scores[o], strict=True))}/{args.seeds}"
                         for o in VARIANTS if o != variant)
        print(f"  {variant:15s} mean {statistics.mean(values):.4f}  min {min(values):.4f}  {wins}")


if __name__ == "__main__":
    main()
