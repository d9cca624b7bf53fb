"""The time budget of a search (`--time-budget`): start new trials only while one can still pay off.

An allocation is paid for whether its GPUs train or idle. With a budget the search keeps starting
trials (no fixed trial count) as long as a new trial could still reach ASHA's first rung before the
budget ends, and stops starting them after that; the trials already running carry on. When a final
training follows (--final-epochs), its expected duration is kept free. The time an epoch takes is
learnt from the trials' own reports (the median, so a few slow epochs do not end the search early).
"""

from __future__ import annotations

import statistics
import time

from hpctune.engine.trial import trained_epoch_seconds


class TimeBudget:
    def __init__(self, seconds: float, grace_period: int, final_epochs: int = 0, start: float | None = None):
        self.deadline = (time.time() if start is None else start) + seconds
        self.grace_period = grace_period
        self.final_epochs = final_epochs
        self.epoch_seconds: list[float] = []

    def observe(self, result: dict) -> None:
        seconds = trained_epoch_seconds(result)
        if seconds is not None:
            self.epoch_seconds.append(seconds)

    def allows_new_trial(self, now: float | None = None) -> bool:
        """Whether a trial started now could reach the first rung, with the final training's time kept free."""
        now = time.time() if now is None else now
        if not self.epoch_seconds:
            return now < self.deadline
        epoch = statistics.median(self.epoch_seconds[-200:])
        return now + epoch * (self.grace_period + self.final_epochs) <= self.deadline
