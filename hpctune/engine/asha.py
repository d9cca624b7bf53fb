"""Asynchronous successive halving (ASHA, Li et al. 2020) whose rungs survive a restore.

Each rung is a milestone in epochs (grace_period x reduction_factor^k, up to max_t). A trial that
reaches a milestone is recorded there with its score and goes on only if it is not below the
(1 - 1/reduction_factor) quantile of the scores recorded there before it: decisions are made as
trials arrive, never waiting for a full rung. This is Ray's AsyncHyperBandScheduler with one
bracket, written on Ray's public `FIFOScheduler` contract so that its state is plain data:

- Ray restores a scheduler from the pickle taken when the Tuner was created (ray issue 30838), so
  a resumed search would forget every rung record. `RungKeeper`, a Tune callback, puts the rungs
  into every experiment snapshot, beside the trial states they must agree with, and puts them back
  when that snapshot is restored; it also mirrors them to a readable file. `save`/`restore` (Ray's
  scheduler contract) write the same data as JSON.
- A non-finite score (NaN, inf) ranks below every finite one: it never survives a rung and never
  raises a cutoff.
- Trials are ranked by `SCORE`, which each trial reports as the best it has reached so far
  (hpctune.engine.trial.BestScore): the task metric plus less than TIE_WEIGHT for a lower validation
  loss. A detector trained from scratch scores exactly 0 mAP for its first epochs, so at an early
  rung every trial ties with the cutoff and plain ASHA (which stops only *below* it) stops nothing.
  Metrics are reported rounded to 6 decimals, so any real difference in the metric still decides.
  Each loss term is divided by its gain (box, cls, dfl, ... may be searched, and Ultralytics reports
  the losses multiplied by them): the raw sum favours small gains, and in bench_search_quality runs
  it ranked trials at epoch 3 against their final mAP (Spearman -0.30 over 62 trials), the gain-free
  sum with it (0.34).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune import Callback
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from hpctune.run.rundir import atomic_write_json

SCORE = "hpctune/asha_score"
TIE_WEIGHT = 1e-7  # below the 1e-6 step of the reported metrics
TIME_ATTR = "epoch"
# Ultralytics multiplies each loss term by a training argument before reporting it (segmentation by `box`)
LOSS_GAINS = {"box_loss": "box", "cls_loss": "cls", "dfl_loss": "dfl", "seg_loss": "box", "pose_loss": "pose",
              "kobj_loss": "kobj"}


def gain_free_loss(metrics: dict[str, float], config: dict[str, Any]) -> float:
    """The summed validation loss with each term divided by its gain from `config` (inf if not finite)."""
    total = 0.0
    for key, value in metrics.items():
        if not (key.startswith("val/") and key.endswith("loss")):
            continue
        gain = config.get(LOSS_GAINS.get(key[len("val/"):], ""), 1.0)
        if isinstance(gain, (int, float)) and not isinstance(gain, bool) and gain > 0:
            total += float(value) / gain
    return total if math.isfinite(total) else math.inf


def score(metrics: dict[str, float], metric: str, config: dict[str, Any] | None = None) -> float | None:
    """The value ASHA ranks a report by (higher is better): the metric, exact ties broken by a lower gain-free
    validation loss (`config` holds the trial's gains). None when the report lacks the metric."""
    if metric not in metrics:
        return None
    tie_break = 1.0 / (1.0 + max(0.0, gain_free_loss(metrics, config or {})))  # in [0, 1]: lower loss, higher
    return float(metrics[metric]) + TIE_WEIGHT * tie_break


def milestones(epochs: int, grace_period: int, reduction_factor: int) -> list[int]:
    """The rungs' epochs, lowest first (Ray's formula, so the same settings give the same rungs)."""
    count = int(math.log(epochs / grace_period) / math.log(reduction_factor) + 1)
    return [int(grace_period * reduction_factor**k) for k in range(count)]


class ASHA(FIFOScheduler):
    """ASHA over `SCORE` (mode max), one bracket, stopping every trial at `max_t`."""

    def __init__(self, *, max_t: int, grace_period: int, reduction_factor: int, metric: str = SCORE):
        super().__init__()
        self._metric, self._mode = metric, "max"
        self.max_t = max_t
        self.reduction_factor = reduction_factor
        self.rungs: dict[int, dict[str, float]] = {m: {} for m in milestones(max_t, grace_period, reduction_factor)}
        self.num_stopped = 0

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        return True  # the metric is fixed: hpctune reports SCORE with every result

    def _cutoff(self, recorded: dict[str, float]) -> float | None:
        finite = [v for v in recorded.values() if math.isfinite(v)]
        if not finite:
            return None
        return float(np.percentile(finite, (1 - 1 / self.reduction_factor) * 100))

    def _decide(self, trial_id: str, epoch: float, value: float) -> str:
        """Record the trial at the highest rung it has just passed; STOP if it ranks below the cutoff."""
        value = value if math.isfinite(value) else -math.inf
        for milestone in sorted(self.rungs, reverse=True):
            recorded = self.rungs[milestone]
            if epoch < milestone or trial_id in recorded:
                continue
            cutoff = self._cutoff(recorded)
            recorded[trial_id] = value
            if value == -math.inf or (cutoff is not None and value < cutoff):
                return TrialScheduler.STOP
            return TrialScheduler.CONTINUE
        return TrialScheduler.CONTINUE

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if TIME_ATTR not in result or self.metric not in result:
            return TrialScheduler.CONTINUE
        if result[TIME_ATTR] >= self.max_t:
            action = TrialScheduler.STOP
        else:
            action = self._decide(trial.trial_id, result[TIME_ATTR], float(result[self.metric]))
        if action == TrialScheduler.STOP:
            self.num_stopped += 1
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if result and TIME_ATTR in result and self.metric in result:
            self._decide(trial.trial_id, result[TIME_ATTR], float(result[self.metric]))

    def debug_string(self) -> str:
        return "ASHA: " + ", ".join(f"epoch {m}: {len(r)} trials" for m, r in sorted(self.rungs.items()))

    # -- state: plain data --------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {"rungs": [{"milestone": m, "recorded": dict(r)} for m, r in sorted(self.rungs.items())],
                "num_stopped": self.num_stopped}

    def set_state(self, state: dict[str, Any]) -> None:
        self.rungs = {int(r["milestone"]): {k: float(v) for k, v in r["recorded"].items()} for r in state["rungs"]}
        self.num_stopped = int(state.get("num_stopped", 0))

    def save(self, checkpoint_path: str) -> None:
        atomic_write_json(Path(checkpoint_path), self.get_state())

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(json.loads(Path(checkpoint_path).read_text()))


def make_scheduler(*, epochs: int, grace_period: int, reduction_factor: int) -> ASHA:
    return ASHA(max_t=epochs, grace_period=grace_period, reduction_factor=reduction_factor)


def rung_records(scheduler: ASHA) -> list[dict[str, Any]]:
    """Each rung's milestone (epoch) and the score each trial had when it reached it."""
    return scheduler.get_state()["rungs"]


class RungKeeper(Callback):
    """Puts the scheduler's rungs into every experiment snapshot and back on restore; mirrors them
    to a readable file (`asha_rungs.json`)."""

    def __init__(self, scheduler: ASHA, rungs_file: str | Path):
        self.scheduler = scheduler
        self.rungs_file = Path(rungs_file)

    def get_state(self) -> dict[str, Any]:
        # Called by Ray while it writes the experiment snapshot, after the scheduler saw every result in it.
        state = self.scheduler.get_state()
        atomic_write_json(self.rungs_file, state["rungs"])
        return {"asha": state}

    def set_state(self, state: dict[str, Any]) -> None:
        self.scheduler.set_state(state["asha"])
