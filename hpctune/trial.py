"""The trainable: one YOLO training per trial, one report and one checkpoint per epoch.

Durability lives in the trial's own folder on shared storage, not in Ray's memory:
- after every epoch, `resume/last.pt` (a complete copy, replaced atomically) and a line in
  `epochs.jsonl` with that epoch's metrics;
- the Ray checkpoint sent with each report only names the epoch, so on restore the trial knows
  which of its epochs the driver had recorded. Epochs the driver never recorded (it was killed
  between the report and its snapshot) are reported again from `epochs.jsonl` instead of being
  trained again, so ASHA sees exactly the history an uninterrupted run would have shown it.
- the last epoch is reported only after Ultralytics' final evaluation and weight stripping,
  because Ray stops a trial the moment it reports epoch == max_t.

This module runs on workers: it imports neither the launcher nor submitit.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from hpctune.asha import SCORE, score

RESUME_WEIGHTS = "resume/last.pt"
RECORDS = "epochs.jsonl"


class EpochRecords:
    """Append-only per-epoch log of one trial; a line is written only once its checkpoint is safe."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                break  # a line torn by a crash ends the usable history
        return records

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())


def completed_epochs(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest record per epoch, in epoch order (a repeated epoch replaces the older one)."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for record in records:
        by_epoch[record["epoch"]] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


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


def _report(record: dict[str, Any], metric: str) -> None:
    result = {**record["metrics"], "epoch": record["epoch"]}
    rank = score(record["metrics"], metric)
    if rank is not None:
        result[SCORE] = rank
    checkpoint = _epoch_checkpoint(record["epoch"])
    try:
        tune.report(result, checkpoint=checkpoint)
    finally:  # Ray copied it to storage: the local folder would pile up in /tmp, one per epoch
        shutil.rmtree(checkpoint.path, ignore_errors=True)


def _copy_atomic(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in metrics.items() if isinstance(v, (int, float))}


def train_trial(config: dict[str, Any], settings: dict[str, Any]) -> None:
    """Ray Tune function trainable. `settings` holds the run's fixed arguments (see search.py)."""
    run_trial(config, settings, _train, _final_evaluation)


EpochDone = Callable[..., None]  # epoch_done(epoch, metrics, extra=None)


def run_trial(
    config: dict[str, Any],
    settings: dict[str, Any],
    train: Callable[[dict[str, Any], dict[str, Any], Path, int, EpochDone], dict[str, float]],
    evaluate: Callable[[Path, dict[str, Any]], dict[str, float]],
) -> None:
    """The protocol of every hpctune trainable (this YOLO one, and hpctune.simulate's stand-in):
    replay the reports the driver missed, then `train(config, settings, folder, done, epoch_done)`
    trains from epoch done + 1, calling `epoch_done(epoch, metrics)` once each epoch's state is
    safe, and returns the final metrics; `evaluate(folder, settings)` gives them when training had
    ended but its final record was lost."""
    trial_id = tune.get_context().get_trial_id()
    folder = Path(settings["trials_dir"]) / trial_id
    records = EpochRecords(folder / RECORDS)
    history = completed_epochs(records.read())
    known = _driver_epoch()
    for record in history:
        if record["epoch"] > known and not (record["epoch"] == settings["epochs"] and not record.get("final")):
            # the driver missed this report: replay it rather than train the epoch again
            _report(record, settings["metric"])
    if history and history[-1].get("final"):
        return
    done = history[-1]["epoch"] if history else 0
    session = {"session": settings["session"], "node": os.uname().nodename, "pid": os.getpid(),
               "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}  # the GPUs Ray gave this trial

    def epoch_done(epoch: int, metrics: dict[str, float], extra: dict[str, Any] | None = None) -> None:
        record = {"epoch": epoch, "metrics": metrics, "time": time.time(), **session, **(extra or {})}
        records.append(record)
        if epoch < settings["epochs"]:
            _report(record, settings["metric"])

    if done >= settings["epochs"]:
        final = evaluate(folder, settings)
    else:
        final = train(config, settings, folder, done, epoch_done)
    record = {"epoch": settings["epochs"], "final": True, "metrics": final, "time": time.time(), **session}
    records.append(record)
    _report(record, settings["metric"])


FORCE_CPU = "HPCTUNE_FORCE_CPU"  # "1": train on the CPU even where Ray assigned GPUs (tests with fake GPUs)


def _train_args(config: dict[str, Any], settings: dict[str, Any], folder: Path) -> dict[str, Any]:
    gpus = 0 if os.environ.get(FORCE_CPU) == "1" else settings["gpu_per_trial"]
    return {
        **settings["train_args"],
        **config,
        "data": settings["data"],
        "epochs": settings["epochs"],
        "project": str(folder.parent),
        "name": folder.name,
        "exist_ok": True,
        "device": "cpu" if not gpus else ",".join(str(i) for i in range(max(1, int(gpus)))),
    }


def _train(config, settings, folder: Path, done: int, epoch_done: EpochDone) -> dict[str, float]:
    import torch
    from ultralytics import YOLO

    torch.set_num_threads(max(1, int(settings["cpus_per_trial"])))
    args = _train_args(config, settings, folder)
    if done:
        model = YOLO(str(folder / RESUME_WEIGHTS))
        args["resume"] = str(folder / RESUME_WEIGHTS)
    else:
        model = YOLO(settings["model"])
    state: dict[str, Any] = {"epoch": None, "final": {}}

    def on_train_epoch_end(trainer) -> None:
        state["epoch"] = trainer.epoch + 1

    def on_fit_epoch_end(trainer) -> None:
        epoch, state["epoch"] = state["epoch"], None
        metrics = _numbers({**trainer.label_loss_items(trainer.tloss, prefix="train"), **trainer.metrics})
        if epoch is None:  # Ultralytics' final evaluation of best.pt
            state["final"] = metrics
            return
        _copy_atomic(trainer.last, folder / RESUME_WEIGHTS)
        epoch_done(epoch, metrics)

    model.add_callback("on_train_epoch_end", on_train_epoch_end)
    model.add_callback("on_fit_epoch_end", on_fit_epoch_end)
    model.train(**args)
    return state["final"] or _numbers(model.trainer.metrics)


def _final_evaluation(folder: Path, settings: dict[str, Any]) -> dict[str, float]:
    """Training finished but its final evaluation was lost: evaluate best.pt now."""
    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import strip_optimizer

    weights = folder / "weights"
    for name in ("last.pt", "best.pt"):
        if (weights / name).exists():
            strip_optimizer(weights / name)
    best = weights / "best.pt" if (weights / "best.pt").exists() else folder / RESUME_WEIGHTS
    args = _train_args({}, settings, folder)
    results = YOLO(str(best)).val(
        data=args["data"], device=args["device"], imgsz=args.get("imgsz", 640), batch=args.get("batch", 16),
        plots=False, project=str(folder), name="final-val", exist_ok=True,
    )
    return _numbers(results.results_dict)
