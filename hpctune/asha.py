"""ASHA whose rung records survive a restore, ranking trials by a score that breaks exact ties.

Ray restores the scheduler from the pickle taken when the Tuner was created (ray issue 30838), so a
resumed search forgets every rung record and lets trials through that it had already outranked. The
callback below puts the scheduler's state into every experiment snapshot, beside the trial states it
must agree with, and puts it back when the snapshot is restored.

ASHA stops a trial only when its metric is *below* the rung's cutoff. A detector trained from
scratch scores exactly 0 mAP for its first epochs, so at an early rung every trial ties with the
cutoff and ASHA stops nothing: the search trains every trial on. Trials are therefore ranked by
`SCORE`: the task metric plus less than TIE_WEIGHT for a lower validation loss. Metrics are reported
rounded to 6 decimals, so any real difference in the metric still decides; the loss only orders
exact ties.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler

from hpctune.rundir import atomic_write_json

SCORE = "hpctune/asha_score"
TIE_WEIGHT = 1e-7  # below the 1e-6 step of the reported metrics


def score(metrics: dict[str, float], metric: str) -> float | None:
    """The value ASHA ranks a report by (higher is better); None when the report lacks the metric."""
    if metric not in metrics:
        return None
    losses = [v for k, v in metrics.items() if k.startswith("val/") and "loss" in k]
    tie_break = 1.0 / (1.0 + max(0.0, sum(losses))) if losses else 0.0  # in (0, 1]: lower loss, higher
    return float(metrics[metric]) + TIE_WEIGHT * tie_break


def make_scheduler(*, epochs: int, grace_period: int, reduction_factor: int) -> ASHAScheduler:
    return ASHAScheduler(
        time_attr="epoch", metric=SCORE, mode="max", max_t=epochs,
        grace_period=grace_period, reduction_factor=reduction_factor,
    )


def rung_records(scheduler: ASHAScheduler) -> list[dict[str, Any]]:
    """Each rung's milestone (epoch) and the score each trial had when it reached it."""
    rungs = []
    for bracket in scheduler._brackets:
        for milestone, recorded in bracket._rungs:
            values = {trial_id: float(scheduler._metric_op * value) for trial_id, value in recorded.items()}
            rungs.append({"milestone": int(milestone), "recorded": values})
    return sorted(rungs, key=lambda rung: rung["milestone"])


class SchedulerStateKeeper(Callback):
    """Saves the scheduler with each experiment snapshot; also mirrors the rungs to a readable file."""

    def __init__(self, scheduler: ASHAScheduler, rungs_file: str | Path):
        self.scheduler = scheduler
        self.rungs_file = Path(rungs_file)

    def get_state(self) -> dict[str, Any]:
        # Called by Ray while it writes the experiment snapshot, after the scheduler saw every result in it.
        atomic_write_json(self.rungs_file, rung_records(self.scheduler))
        return {"scheduler": pickle.dumps(self.scheduler.__dict__)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.scheduler.__dict__.update(pickle.loads(state["scheduler"]))
