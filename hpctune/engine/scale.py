"""What keeps a search's driver light when it runs thousands of trials on many GPUs.

search.py applies these settings to Ray Tune; scripts/bench_scale.py measures them against the
settings before them (README, "Scaling"). Three of them reach into Ray Tune's privates, through hpctune.ray_compat only,
scoped to hpctune's own fit(): a Ray that differs costs speed, never correctness.

- Experiment snapshots are adaptive: the period is 19 x the time the last one took (so they take
  at most ~5 % of the driver's time), at least 1 s and at most 60 s (Ray's own `auto` policy with a
  1 s floor instead of 10 s), no longer after every driver step (10 per second even when idle).
  Nothing of the resume guarantee depends on the period: a trial replays from its epochs.jsonl
  every report the restored snapshot lacks (trial.py), ASHA's rungs travel in the same snapshot
  (asha.py), and a trial created after the snapshot is created again with the same id and
  configuration (the search algorithm's counter is in the snapshot too) and finds its records.
  A longer period only means more replayed reports after a crash, never a retrained epoch. Ray
  still forces a snapshot whenever a trial has reported `CHECKPOINTS_KEPT` checkpoints since the
  last one, so that no snapshot ever names a checkpoint folder that was deleted: about one per two
  epoch durations, whatever the number of trials (negligible for real epochs of minutes).
- Trial actors are reused (`reuse_actors`): a trial stopped by ASHA hands its process, GPU and
  imports to the next pending trial instead of Ray starting a new worker process for it.
  Ray Tune hands a freed actor to a pending trial even when that trial's own actor is still
  starting, and kills the starting one. When epochs are shorter than an actor's start-up (seen on
  the 3-node test cluster: 2 s epochs, 20-60 s start-ups on a loaded machine), that churn never
  ends: workers started and killed for minutes, a third of the GPUs never busy. hpctune hands the
  freed actor to a pending trial whose actor has no resources yet instead (`_reuse_guard`), and
  lets Ray ask for at most as many waiting actors as the cluster has trial slots
  (TUNE_MAX_PENDING_TRIALS_PG; Ray's default is 200 or more).
- Trials keep less state in Ray's memory, and so in every snapshot: no running averages over the
  last 5 and 10 results of every reported value (Ray pickles two deques per value into each
  snapshot of a running trial: most of the time a snapshot spends per running trial), and once a
  trial has finished, no analysis of values other than the searched metric and the epoch.
  hpctune reads results from the trials' own records, never from these.
- Before a restore, experiment-state files of older sessions are deleted (Ray restores from the
  newest only, but copies every .json/.pkl of the experiment folder into its staging folder and
  back to storage with every snapshot).
- Trial folders are named by a module-level function, not a lambda (Ray pickles it into every
  trial's state: 1.2 KB per trial per snapshot).
- Of Ray's per-trial result loggers only the JSON one (tune/<trial>/result.json) is kept: its CSV
  logger repeats it, and its TensorBoard logger repeats hpctune's (tracking.py) with an fsync per
  result.

HPCTUNE_SCALE_PROFILE=baseline gives the settings before all this (a snapshot after every driver
step, no actor reuse, no compaction or pruning), for the benchmark's same-run comparison;
HPCTUNE_SNAPSHOT_PERIOD_S overrides the snapshot period (`auto`, or seconds; 0 = every step).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from ray.tune import Callback

from hpctune import ray_compat

log = logging.getLogger(__name__)

PROFILE_ENV = "HPCTUNE_SCALE_PROFILE"
PERIOD_ENV = "HPCTUNE_SNAPSHOT_PERIOD_S"
CHECKPOINTS_KEPT = 2  # Ray checkpoint folders kept per trial (each names one epoch; trial.py)
_STATE_FILE = re.compile(r"^(experiment_state|basic-variant-state|search_gen_state|callback-states)-(.+)\.(json|pkl)$")


def baseline() -> bool:
    return os.environ.get(PROFILE_ENV, "").strip().lower() == "baseline"


def snapshot_period() -> str:
    """TUNE_GLOBAL_CHECKPOINT_S for this search: Ray's adaptive `auto`, or the override."""
    override = os.environ.get(PERIOD_ENV, "").strip()
    if override:
        return override
    return "0" if baseline() else "auto"


def tuner_patches(trial_ids=None):
    """The Ray Tune patches of this search (adaptive snapshot period, actor reuse guard, trial ids),
    scoped to one fit()."""
    return ray_compat.tuner_patches(adaptive_period=snapshot_period() == "auto", reuse_guard=not baseline(),
                                    trial_ids=trial_ids)


def apply_ray_env(cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0) -> None:
    """Set what Ray Tune reads from the environment when the Tuner runs (driver process, Ray
    connected: the trial slots are counted from the cluster's resources)."""
    period = snapshot_period()
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = period
    os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = "auto" if baseline() else str(_slots(cpus_per_trial, gpus_per_trial))
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "0" if baseline() else "1"  # see callbacks()
    if not baseline():  # the forced snapshots below are by design: Ray warns about each one otherwise
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def _slots(cpus_per_trial: float, gpus_per_trial: float) -> int:
    """Trials the cluster can run at once."""
    import ray

    resources = ray.cluster_resources()
    slots = [resources.get("CPU", 1.0) / cpus_per_trial] if cpus_per_trial else []
    if gpus_per_trial:
        slots.append(resources.get("GPU", 0.0) / gpus_per_trial)
    return max(1, int(min(slots, default=1)))


def reuse_actors() -> bool:
    return not baseline()


def callbacks(metric: str) -> list[Callback]:
    if baseline():
        return []
    from ray.tune.logger import JsonLoggerCallback

    return [JsonLoggerCallback(), LeanTrialState(metric)]


def trial_dirname(trial) -> str:
    """A trial's folder under tune/ (and trials/): its id."""
    return trial.trial_id


def dirname_creator():
    """trial_dirname; in the baseline profile the lambda used before (pickled into every trial)."""
    return (lambda trial: trial.trial_id) if baseline() else trial_dirname


class LeanTrialState(Callback):
    """Keeps a trial's entry in Ray's snapshots small (see the module docstring)."""

    def __init__(self, metric: str):
        self.metric = metric

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        ray_compat.drop_running_averages(trial)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        ray_compat.compact_finished(trial, {self.metric, "epoch", "training_iteration"})


def prune_stale_states(experiment: Path) -> list[str]:
    """Delete the state files of older sessions in Ray's experiment folder; keep the newest
    session's, the one Ray restores from (it picks the greatest experiment_state file name)."""
    if baseline():
        return []
    sessions: dict[str, list[Path]] = {}
    for path in experiment.iterdir() if experiment.is_dir() else []:
        match = _STATE_FILE.match(path.name)
        if match and path.is_file():
            sessions.setdefault(match.group(2), []).append(path)
    newest = max((s for s, files in sessions.items()
                  if any(f.name.startswith("experiment_state") for f in files)), default=None)
    removed = []
    for session, files in sessions.items():
        if newest is not None and session < newest:
            for path in files:
                path.unlink(missing_ok=True)
                removed.append(path.name)
    if removed:
        log.info("removed %d experiment-state files of earlier sessions", len(removed))
    return removed
