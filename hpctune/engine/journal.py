"""The searcher wrapper that writes suggestions.jsonl (see hpctune.run.journal for why)."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from hpctune.engine.budget import TimeBudget
from hpctune.run.journal import read_journal
from hpctune.run.rundir import append_jsonl

log = logging.getLogger(__name__)


class Journaled(Searcher):
    """A searcher whose suggestions are recorded (fsynced) before a trial is created from them.

    It also names the trials: `<run token>_<n>` for the n-th suggestion (`next_trial_id`, installed
    for hpctune's fit() through hpctune.ray_compat), with n saved in every experiment snapshot. A
    trial created after the last snapshot is therefore created again, after a driver crash, under
    the same id: it finds its recorded configuration here and its epochs in its own folder.
    """

    active: Journaled | None = None  # the instance Ray drives in this process (set when built or unpickled)

    def __init__(self, searcher: Searcher, path: Path, baseline: dict[str, Any] | None, grown: int = 0):
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher = searcher
        self.path = Path(path)
        self.baseline = baseline or None
        self.token = uuid.uuid4().hex[:5]
        self.count = 0  # suggestions made: restored from the snapshot, so ids repeat after a crash
        self.grown = grown  # growth requests of the manifest this state has taken in (built after them: all)
        self._entries: dict[str, dict[str, Any]] | None = None  # read from the file once per driver
        self.budget: TimeBudget | None = None  # set by the driver for each session (--time-budget)
        self.job_end: TimeBudget | None = None  # the time left to this job (set by the driver under SLURM)
        self._paused = False  # said so in the log
        Journaled.active = self

    def next_trial_id(self) -> str:
        return f"{self.token}_{self.count:05d}"

    def reopen(self, requests: int) -> bool:
        """Whether the manifest holds growth requests this state has not taken in: then a search that
        ended (its cap, or FINISHED from the time budget) is open again, once per request. Counted in
        the snapshot, so a driver killed before its first snapshot reopens it again, and no later."""
        pending = requests > self.grown
        self.grown = max(self.grown, requests)
        return pending

    def __getstate__(self) -> dict[str, Any]:
        # the file, not a pickle, is the record; budgets are set anew by each driver
        return {**self.__dict__, "_entries": None, "budget": None, "job_end": None, "_paused": False}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"grown": 0, "job_end": None, "_paused": False, **state})  # pickles of older runs
        Journaled.active = self  # Tuner.restore unpickles the searcher it will drive

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self._entries is None:
            self._entries = read_journal(self.path)
        recorded = self._entries
        if trial_id in recorded:  # created again after a crash: the same configuration, whatever the budget
            config = recorded[trial_id]["config"]
            self.searcher.adopt(trial_id, config)
        else:
            if self.budget is not None and not self.budget.allows_new_trial():
                return Searcher.FINISHED  # no new trial could reach the first rung in the time left
            if self.job_end is not None and not self.job_end.allows_new_trial():
                self._say_paused()
                return None  # not now: the search goes on after the requeue (a pause, not an end)
            config = self.searcher.suggest(trial_id)
            if config is None or config is Searcher.FINISHED:
                return config
            entry = {"trial_id": trial_id, "n": len(recorded), "config": config,
                     "baseline": bool(self.baseline) and not recorded and config == self.baseline}
            append_jsonl(self.path, entry)  # durable before Ray creates the trial
            recorded[trial_id] = entry
        self.count += 1  # a trial is created: the next one gets the next id
        return config

    def _say_paused(self) -> None:
        if not self._paused:
            self._paused = True
            log.info("no new trial in this job: one started now could not finish an epoch before the job's time "
                     "limit; the trials running go on, and the search continues after the requeue")

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        for budget in (self.budget, self.job_end):
            if budget is not None:
                budget.observe(result)
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.searcher.on_trial_complete(trial_id, result, error)

    # Ray's SearchGenerator saves a wrapper's get_state() and the wrapped searcher's own save_to_dir().
    def get_state(self) -> dict:
        return {"count": self.count, "grown": self.grown}

    def set_state(self, state: dict) -> None:
        Journaled.active = self
        self.count = int(state["count"])
        self.grown = int(state.get("grown", 0))
