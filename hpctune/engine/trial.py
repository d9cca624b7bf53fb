"""The trial protocol every trainer follows, one report and one checkpoint per epoch.

Durability lives in the trial's own folder on shared storage, not in Ray's memory:
- after every epoch, `resume/last.pt` (a complete copy, replaced atomically; the one it replaces
  kept as `resume/previous.pt`) and a line in `epochs.jsonl` with that epoch's metrics;
- a trial resumes from the newest checkpoint it can read (given a `checkpoint_epoch` reader) and
  forgets the records past it: it trains those epochs again rather than claim them, reporting to
  Ray only the epochs the driver had not recorded yet;
- the Ray checkpoint sent with each report only names the epoch, so on restore the trial knows
  which of its epochs the driver had recorded. Epochs the driver never recorded (it was killed
  between the report and its snapshot) are reported again from `epochs.jsonl` instead of being
  trained again, so ASHA sees exactly the history an uninterrupted run would have shown it.
- the last epoch is reported only after Ultralytics' final evaluation and weight stripping,
  because Ray stops a trial the moment it reports epoch == max_t.

This module runs on workers: it imports neither the launcher nor submitit, nor any trainer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ray import tune

from hpctune.engine.asha import SCORE, score
from hpctune.run.records import RECORDS, EpochOf, EpochRecords, completed_epochs, resumable_history


def _epoch_checkpoint(epoch: int) -> tune.Checkpoint:
    folder = tempfile.mkdtemp(prefix="hpctune-ckpt-")
    Path(folder, "epoch.json").write_text(json.dumps({"epoch": epoch}))
    return tune.Checkpoint.from_directory(folder)


def _driver_epoch() -> int:
    """The last epoch whose report the driver's restored snapshot holds (0 for a fresh trial)."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as folder:
        return int(json.loads(Path(folder, "epoch.json").read_text())["epoch"])


class BestScore:
    """What ASHA ranks a trial by at each epoch: the best score it has reached so far, not its last one.
    A trial stopped at a rung delivers its best.pt, and the metric of a short training swings from epoch
    to epoch (0.0045, 0.0006, 0.0022 at epochs 6, 7, 9 of one bench_search_quality trial). A non-finite
    value ranks last at once: a diverged training does not recover."""

    def __init__(self, metric: str, config: dict[str, Any]):
        self.metric, self.config = metric, config
        self.best: float | None = None

    def __call__(self, metrics: dict[str, float]) -> float | None:
        value = score(metrics, self.metric, self.config)
        if value is None or not math.isfinite(value):
            return value
        if self.best is None or value > self.best:
            self.best = value
        return self.best


def _report(record: dict[str, Any], rank: float | None) -> None:
    result = {**record["metrics"], "epoch": record["epoch"]}
    if rank is not None:
        result[SCORE] = rank
    checkpoint = _epoch_checkpoint(record["epoch"])
    try:
        tune.report(result, checkpoint=checkpoint)
    finally:  # Ray copied it to storage: the local folder would pile up in /tmp, one per epoch
        shutil.rmtree(checkpoint.path, ignore_errors=True)


EpochDone = Callable[..., None]  # epoch_done(epoch, metrics, extra=None)
OUTPUT = "output.log"  # the trial's stdout and stderr, kept beside its records
REPLAYED_BELOW_S = 0.2  # a report faster than this replayed a recorded epoch: it trained nothing


def trained_epoch_seconds(result: dict[str, Any]) -> float | None:
    """The seconds an epoch took to train, from a Ray result; None for a replayed report."""
    seconds = result.get("time_this_iter_s")
    return float(seconds) if isinstance(seconds, (int, float)) and seconds >= REPLAYED_BELOW_S else None


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2: Python, C++ and child
    processes alike) to `path` while the trial trains: Ray keeps worker output only in its node-local
    temp folder, deleted with the job, so a user could not read why a trial failed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException:
            traceback.print_exc()  # why the trial failed, in its own folder
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


@contextlib.contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """hpctune's warnings onto this process's stderr (which output_to sends to the trial's output.log)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("hpctune: %(message)s"))
    logger = logging.getLogger("hpctune")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def run_trial(
    config: dict[str, Any],
    settings: dict[str, Any],
    train: Callable[[dict[str, Any], dict[str, Any], Path, int, EpochDone], dict[str, float]],
    evaluate: Callable[[Path, dict[str, Any]], dict[str, float]],
    checkpoint_epoch: EpochOf | None = None,
) -> None:
    """The protocol of every hpctune trainable (this YOLO one, and hpctune.testing.simulate's stand-in):
    replay the reports the driver missed, then `train(config, settings, folder, done, epoch_done)`
    trains from epoch done + 1, calling `epoch_done(epoch, metrics)` once each epoch's state is
    safe, and returns the final metrics; `evaluate(folder, settings)` gives them when training had
    ended but its final record was lost; `checkpoint_epoch(path)` reads the epoch a resume checkpoint
    holds (None: unreadable), so that `done` is the epoch of a checkpoint that can be loaded."""
    trial_id = tune.get_context().get_trial_id()
    folder = Path(settings["trials_dir"]) / trial_id
    records = EpochRecords(folder / RECORDS)
    history = completed_epochs(records.read())
    if checkpoint_epoch is not None:  # a fallback to an older checkpoint is said in the trial's own output.log
        with output_to(folder / OUTPUT), _warnings_to_stderr():
            history = resumable_history(folder, history, settings["epochs"], checkpoint_epoch)
    known = _driver_epoch()
    rank = BestScore(settings["metric"], config)
    for record in history:
        value = rank(record["metrics"])
        if record["epoch"] > known and not (record["epoch"] == settings["epochs"] and not record.get("final")):
            # the driver missed this report: replay it rather than train the epoch again
            _report(record, value)
    if history and history[-1].get("final"):
        return
    done = history[-1]["epoch"] if history else 0
    session = {"session": settings["session"], "node": os.uname().nodename, "pid": os.getpid(),
               "python": sys.executable,  # the interpreter that trained: --python and the setup lines at work
               "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}  # the GPUs Ray gave this trial

    def epoch_done(epoch: int, metrics: dict[str, float], extra: dict[str, Any] | None = None) -> None:
        record = {"epoch": epoch, "metrics": metrics, "time": time.time(), **session, **(extra or {})}
        records.append(record)
        value = rank(metrics)
        if known < epoch < settings["epochs"]:  # not one Ray has: retrained after an unreadable checkpoint
            _report(record, value)

    with output_to(folder / OUTPUT):
        if done >= settings["epochs"]:
            final = evaluate(folder, settings)
        else:
            final = train(config, settings, folder, done, epoch_done)
    record = {"epoch": settings["epochs"], "final": True, "metrics": final, "time": time.time(), **session}
    records.append(record)
    _report(record, rank(final))
