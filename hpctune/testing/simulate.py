"""Simulated trials for scale benchmarks: a stand-in for the YOLO trainable that sleeps through its
epochs and reports exactly like a real trial.

A simulated run is an ordinary run directory whose spec has a `simulate` section; `search.run`
drives it like any other (Tuner, ASHA, experiment snapshots, restore), only the trainable differs:
`simulated_trial` goes through `trial.run_trial`, the protocol of the YOLO trainable (per-epoch
record in epochs.jsonl, one report with a tiny checkpoint naming the epoch, replay of the reports
the driver missed, a final record), but each epoch is a sleep instead of a training.

What an epoch costs and what it scores are drawn from seeded generators keyed by the run's seed,
the configuration and the epoch, so a resumed trial continues the same story:
- duration: `epoch_s` x a per-trial factor (lognormal, `trial_spread`: configurations differ in
  speed) x a per-epoch factor (lognormal, `epoch_jitter`);
- metric: a noisy saturating learning curve, `peak * q(config) * (1 - exp(-epoch / tau(config)))`,
  where q falls with the distance of the configuration from an optimum drawn from the seed and
  tau makes some configurations slow starters, so ASHA has real and not always right decisions.

Each epoch record also carries `busy: [start, end]` (wall-clock seconds of the epoch's sleep),
from which scripts/bench_scale.py computes GPU-slot utilisation.

This module runs on workers: it imports neither ultralytics nor torch (a trial starts in the time
Ray needs to start its actor).
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from hpctune.engine.trial import EpochDone, run_trial

DEFAULTS: dict[str, Any] = {
    "epoch_s": 2.0,  # median seconds per epoch
    "trial_spread": 0.25,  # sigma of the per-trial speed factor (lognormal)
    "epoch_jitter": 0.05,  # sigma of the per-epoch factor (lognormal)
    "final_s": 0.0,  # seconds of the final evaluation after the last epoch
    "weights_bytes": 0,  # > 0: also write resume/last.pt of this size each epoch, like a real trial
    "gpus_per_node": 8,  # fake GPUs a local (non-SLURM) simulated run declares to Ray
    "peak": 0.6,  # the metric a perfect configuration approaches
    "noise": 0.01,  # sigma of the per-epoch metric noise
    "stop_hang_s": 0.0,  # > 0: a driver callback hangs this long when a stop ends the experiment (a stuck W&B)
}
METRIC = "metrics/mAP50-95(B)"
SPACE: dict[str, Any] = {
    "lr0": {"loguniform": [1e-5, 1e-1]},
    "momentum": {"uniform": [0.6, 0.98]},
    "weight_decay": {"uniform": [0.0, 0.001]},
    "box": {"uniform": [0.02, 0.2]},
}


def settings(**overrides: Any) -> dict[str, Any]:
    """The `simulate` section of a spec: DEFAULTS with `overrides`; unknown names are refused."""
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown simulation setting {unknown[0]!r}: use one of {', '.join(DEFAULTS)}")
    return {**DEFAULTS, **overrides}


def make_spec(
    *, name: str, storage: str | Path, trials: int, epochs: int = 27, grace_period: int = 3,
    reduction_factor: int = 3, seed: int = 0, space: dict[str, Any] | None = None, **simulation: Any,
):
    """A RunSpec for a simulated search (no dataset, no model: nothing is checked against ultralytics)."""
    from hpctune.run.spec import RunSpec

    if grace_period > epochs or trials < 1 or reduction_factor < 2:
        raise ValueError("need trials >= 1, grace_period <= epochs and reduction_factor >= 2")
    return RunSpec(
        model="simulated", data="simulated", task="detect", metric=METRIC, epochs=epochs,
        grace_period=grace_period, reduction_factor=reduction_factor, max_samples=trials,
        gpu_per_trial=1.0, cpus_per_trial=1.0, seed=seed, name=name, storage=str(Path(storage).resolve()),
        space=dict(space or SPACE), train_args={},
        # the trainable sees only this section: it carries the seed and space the curves depend on
        simulate={**settings(**simulation), "seed": seed, "space": dict(space or SPACE)}, trainer="simulated",
    )


def create_run(**kwargs: Any):
    """Write the run directory of a simulated search (see make_spec); return its RunDir."""
    from hpctune.api import create_run as create

    return create(make_spec(**kwargs))


def callbacks(spec) -> list:
    """Driver callbacks of simulated runs: the one that hangs on a stop, where `stop_hang_s` asks for it."""
    hang_s = float(spec.simulate.get("stop_hang_s", 0.0))
    return [HangOnStop(hang_s)] if hang_s > 0 else []


class HangOnStop(Callback):
    """Stands for a callback that blocks the end of an interrupted search (W&B waiting on its uploads). A
    trial still running when the experiment ends tells a stop: Ray Tune ends such trials without calling
    on_trial_complete (their status reads TERMINATED by then)."""

    def __init__(self, hang_s: float):
        self.hang_s = hang_s
        self.running: set[str] = set()

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)

    def on_experiment_end(self, trials, **info):
        if self.running:
            time.sleep(self.hang_s)


def local_resources(spec) -> tuple[int, int]:
    """(cpus, gpus) a local simulated run declares to Ray: one CPU and one fake GPU per slot."""
    gpus = int(spec.simulate.get("gpus_per_node", DEFAULTS["gpus_per_node"]))
    return gpus, gpus


# ---------------------------------------------------------------- the stand-in trainable

def prepare_env(env_dir: Path) -> dict[str, str]:
    return {}  # the stand-in imports nothing that needs settings


def simulated_trial(config: dict[str, Any], settings: dict[str, Any]) -> None:
    """Ray Tune function trainable: trial.run_trial with sleeping epochs."""
    run_trial(config, settings, _train, _evaluate)


def _train(config: dict[str, Any], settings: dict[str, Any], folder: Path, done: int,
           epoch_done: EpochDone) -> dict[str, float]:
    sim = {**DEFAULTS, **settings["simulate"]}
    model = Model(config, sim.get("space", {}), int(sim.get("seed", 0)), sim)
    metrics: dict[str, float] = {}
    for epoch in range(done + 1, settings["epochs"] + 1):
        start = time.time()
        time.sleep(model.epoch_seconds(epoch))
        end = time.time()
        metrics = model.metrics(epoch)
        if sim["weights_bytes"]:
            _write_weights(folder, int(sim["weights_bytes"]), epoch)
        epoch_done(epoch, metrics, {"busy": [round(start, 4), round(end, 4)]})
    if sim["final_s"]:
        time.sleep(float(sim["final_s"]))
    return metrics


def _evaluate(folder: Path, settings: dict[str, Any]) -> dict[str, float]:
    """All epochs were trained but the final record was lost: the last epoch's metrics."""
    from hpctune.run.records import RECORDS, EpochRecords, completed_epochs

    history = completed_epochs(EpochRecords(folder / RECORDS).read())
    return dict(history[-1]["metrics"]) if history else {}


def _write_weights(folder: Path, size: int, epoch: int) -> None:
    """A stand-in for resume/last.pt, written like the real one."""
    from hpctune.run.records import RESUME_WEIGHTS
    from hpctune.run.rundir import atomic_write_bytes

    target = folder / RESUME_WEIGHTS
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, epoch.to_bytes(8, "little") * (size // 8) + b"\0" * (size % 8))


class Model:
    """The simulated behaviour of one configuration: epoch durations and a learning curve."""

    def __init__(self, config: dict[str, Any], space: dict[str, Any], seed: int, sim: dict[str, Any]):
        self.sim = sim
        self.key = f"{seed}|{json.dumps(config, sort_keys=True, default=str)}"
        optimum = random.Random(f"{seed}|optimum")
        positions = {k: _position(v, space.get(k)) for k, v in sorted(config.items())}
        distance = sum((u - optimum.random()) ** 2 for u in positions.values()) / max(1, len(positions))
        self.quality = math.exp(-distance / (2 * 0.12))
        trial = random.Random(f"{self.key}|trial")
        self.speed = math.exp(trial.gauss(0.0, float(sim["trial_spread"])))
        self.tau = 1.0 + 6.0 * trial.random() ** 2  # epochs to reach 63 % of the plateau

    def epoch_seconds(self, epoch: int) -> float:
        jitter = random.Random(f"{self.key}|{epoch}|time").gauss(0.0, float(self.sim["epoch_jitter"]))
        return float(self.sim["epoch_s"]) * self.speed * math.exp(jitter)

    def metrics(self, epoch: int) -> dict[str, float]:
        noise = random.Random(f"{self.key}|{epoch}|metric").gauss(0.0, float(self.sim["noise"]))
        value = float(self.sim["peak"]) * self.quality * (1.0 - math.exp(-epoch / self.tau)) + noise
        value = min(1.0, max(0.0, value))
        loss = 2.0 - 1.5 * value
        # the ten values a YOLO detection trial reports (Ray keeps state per reported value)
        return {key: round(v, 6) for key, v in {
            "train/box_loss": loss * 1.05, "train/cls_loss": loss * 1.4, "train/dfl_loss": loss * 0.9,
            "metrics/precision(B)": min(1.0, value * 1.5), "metrics/recall(B)": min(1.0, value * 1.4),
            "metrics/mAP50(B)": min(1.0, value * 1.6), METRIC: value,
            "val/box_loss": loss, "val/cls_loss": loss * 1.3, "val/dfl_loss": loss * 0.95,
        }.items()}


def _position(value: Any, dist: Any) -> float:
    """Where a value lies in its searched range, 0..1 (log scale for loguniform)."""
    if isinstance(dist, dict) and dist:
        kind, args = next(iter(dist.items()))
        if kind == "choice" and isinstance(args, list) and args:
            return args.index(value) / max(1, len(args) - 1) if value in args else 0.5
        if isinstance(args, list) and len(args) >= 2 and isinstance(value, (int, float)):
            lo, hi = float(args[0]), float(args[1])
            if kind == "loguniform" and lo > 0 and value > 0:
                lo, hi, value = math.log(lo), math.log(hi), math.log(value)
            return min(1.0, max(0.0, (float(value) - lo) / (hi - lo))) if hi > lo else 0.5
    return random.Random(repr(value)).random()


trainable = simulated_trial
