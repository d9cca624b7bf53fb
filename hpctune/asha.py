"""ASHA whose rung records survive a restore.

Ray restores the scheduler from the pickle taken when the Tuner was created (ray issue 30838), so a
resumed search forgets every rung record and lets trials through that it had already outranked. The
callback below puts the scheduler's state into every experiment snapshot, beside the trial states it
must agree with, and puts it back when the snapshot is restored.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler

from hpctune.rundir import atomic_write_json


def make_scheduler(*, metric: str, epochs: int, grace_period: int, reduction_factor: int) -> ASHAScheduler:
    return ASHAScheduler(
        time_attr="epoch", metric=metric, mode="max", max_t=epochs,
        grace_period=grace_period, reduction_factor=reduction_factor,
    )


def rung_records(scheduler: ASHAScheduler) -> list[dict[str, Any]]:
    """Each rung's milestone (epoch) and the metric each trial had when it reached it."""
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
