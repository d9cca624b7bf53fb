"""The YOLO trainer: one Ultralytics training per trial, following hpctune.engine.trial's protocol."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hpctune.engine.trial import EpochDone, run_trial
from hpctune.run.records import RESUME_WEIGHTS, save_resume_weights
from hpctune.run.spec import Resources
from hpctune.yolo.offline import prepare as prepare_env  # noqa: F401  (the trainer protocol: engine.trainers)


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in metrics.items() if isinstance(v, (int, float))}


def train_trial(config: dict[str, Any], settings: dict[str, Any]) -> None:
    """Ray Tune function trainable. `settings` holds the run's fixed arguments (see engine/driver.py)."""
    run_trial(config, settings, _train, _final_evaluation, checkpoint_epoch)


def checkpoint_epoch(path: Path) -> int | None:
    """The epoch (from 1) a resume checkpoint holds, None where it cannot be loaded (truncated by a
    crash or a full disk): Ultralytics saves its own 0-based epoch counter in it."""
    from ultralytics.utils.patches import torch_load

    try:
        return int(torch_load(path, map_location="cpu")["epoch"]) + 1
    except Exception:  # any failure to unpickle means the same: this checkpoint cannot be resumed from
        return None


trainable = train_trial


def local_resources(spec) -> tuple[int, int]:
    """CPUs and GPUs a local search uses: the allocation's share inside SLURM, the machine's outside."""
    resources = Resources.detect()
    return resources.cpus, resources.gpus


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
        metrics = _numbers({**trainer.label_loss_items(trainer.tloss, prefix="train"), **trainer.metrics,
                            "fitness": trainer.fitness})  # --metric fitness
        if epoch is None:  # Ultralytics' final evaluation of best.pt
            state["final"] = metrics
            return
        save_resume_weights(Path(trainer.last), folder)
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
