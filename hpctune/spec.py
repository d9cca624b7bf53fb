"""RunSpec: everything a search needs, resolved and validated before anything is written.

`build_spec` turns user arguments (Ultralytics' tune() names) into a RunSpec, raising an
HpctuneError subclass with the input and the fix for every mistake a user can make.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from hpctune import space as spaces
from hpctune.data import resolve_data, resolve_model
from hpctune.errors import SpecError

log = logging.getLogger(__name__)

TASK_METRIC = {
    "detect": "metrics/mAP50-95(B)",
    "obb": "metrics/mAP50-95(B)",
    "segment": "metrics/mAP50-95(M)",
    "pose": "metrics/mAP50-95(P)",
    "classify": "metrics/accuracy_top1",
}
# Set by hpctune for every trial; a user value would break the run directory or the search.
RESERVED_TRAIN_ARGS = {"project", "name", "resume", "exist_ok", "mode", "tune", "device"}


@dataclass
class RunSpec:
    model: str
    data: str
    task: str
    metric: str
    epochs: int
    grace_period: int
    reduction_factor: int
    max_samples: int
    gpu_per_trial: float
    cpus_per_trial: float
    seed: int
    name: str
    storage: str
    space: dict[str, Any]
    train_args: dict[str, Any] = field(default_factory=dict)
    data_config: dict[str, Any] = field(default_factory=dict)
    wandb: dict[str, Any] = field(default_factory=dict)  # empty: no W&B; else project, entity, group, mode
    cluster: dict[str, Any] = field(default_factory=dict)  # empty: local; else the SLURM settings of the job
    simulate: dict[str, Any] = field(default_factory=dict)  # empty: YOLO trials; else hpctune.simulate's stand-in

    @property
    def run_dir(self) -> Path:
        return Path(self.storage) / self.name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Resources:
    """What one node offers to trials: the allocation's share inside SLURM, the machine's outside."""

    cpus: int
    gpus: int

    @classmethod
    def detect(cls) -> Resources:
        from hpctune.slurm.allocation import Allocation

        allocation = Allocation.from_env()
        if allocation is not None:
            return cls(cpus=allocation.cpus, gpus=allocation.gpus)
        import torch

        return cls(cpus=len(os.sched_getaffinity(0)), gpus=torch.cuda.device_count())


def build_spec(
    *,
    model: str = "yolov8n.yaml",
    data: str | None = None,
    space: str | Path | dict | None = None,
    grace_period: int = 10,
    gpu_per_trial: float | None = None,
    max_samples: int = 10,
    train_args: dict[str, Any] | None = None,
    epochs: int | None = None,
    reduction_factor: int = 3,
    seed: int = 0,
    name: str | None = None,
    storage: str | Path = "runs/hpctune",
    cpus_per_trial: float | None = None,
    resources: Resources | None = None,
    wandb: dict[str, Any] | None = None,
) -> RunSpec:
    """Validate the arguments of a new search and resolve them into a RunSpec. Writes nothing."""
    train_args = dict(train_args or {})
    bad = sorted(RESERVED_TRAIN_ARGS & set(train_args))
    if bad:
        raise SpecError(f"training argument '{bad[0]}' is set by hpctune for each trial: remove it")
    unknown = sorted(set(train_args) - spaces.training_argument_names())
    if unknown:
        raise SpecError(f"'{unknown[0]}' is not an ultralytics training argument: remove it or fix its name")
    model = train_args.pop("model", None) or model
    data = train_args.pop("data", None) or data
    epochs = _positive_int("epochs", epochs if epochs is not None else train_args.pop("epochs", 100))
    train_args.pop("epochs", None)
    if data is None:
        raise SpecError("no dataset given: pass data=path/to/data.yaml")
    if not isinstance(max_samples, int) or isinstance(max_samples, bool) or max_samples <= 0:
        raise SpecError(f"max_samples must be a whole number > 0 (got {max_samples}): e.g. --max-samples 10")
    grace_period = _positive_int("grace_period", grace_period)
    if grace_period > epochs:
        raise SpecError(
            f"grace_period {grace_period} is larger than epochs {epochs}: lower --grace-period or raise epochs"
        )
    reduction_factor = _positive_int("reduction_factor", reduction_factor)
    if reduction_factor < 2:
        raise SpecError(f"reduction_factor must be >= 2 (got {reduction_factor}): 3 is the usual choice")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise SpecError(f"seed must be a whole number (got {seed!r})")

    search_space = spaces.load_space(space)
    overlap = sorted(set(search_space) & set(train_args))
    if overlap:
        raise SpecError(f"'{overlap[0]}' is both searched and fixed in train_args: keep one of them")
    _check_value_types({**train_args, **_fixed(search_space)})
    notes = [spaces.default_space_note()] if space is None else []
    notes += _pin_optimizer(search_space, train_args)

    resources = resources or Resources.detect()
    gpu_per_trial = _check_gpus(gpu_per_trial, resources)
    cpus_per_trial = _check_cpus(cpus_per_trial, gpu_per_trial, resources)

    model, task = resolve_model(model, train_args.get("task"))
    data_path, data_config = resolve_data(data, task)
    storage = _check_storage(storage)
    name = name or time.strftime("tune-%Y%m%d-%H%M%S")
    if "/" in name or name in {".", ".."}:
        raise SpecError(f"name '{name}' must be a plain folder name: use --name my-search")
    if (Path(storage) / name).exists():
        raise SpecError(
            f"run directory {Path(storage) / name} already exists: `hpctune resume` it or choose another --name"
        )
    for note in filter(None, notes):  # said only once the whole input is valid: an error stays one line
        log.warning(note)
    train_args.setdefault("plots", False)  # per-trial plots cost seconds each and nobody reads them
    train_args.setdefault("workers", min(8, max(0, int(cpus_per_trial) - 1)))
    return RunSpec(
        model=model, data=data_path, task=task, metric=TASK_METRIC[task], epochs=epochs,
        grace_period=grace_period, reduction_factor=reduction_factor, max_samples=max_samples,
        gpu_per_trial=gpu_per_trial, cpus_per_trial=cpus_per_trial, seed=seed, name=name,
        storage=storage, space=search_space, train_args=train_args, data_config=data_config,
        wandb=_check_wandb(wandb, name),
    )


def _positive_int(label: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SpecError(f"{label} must be a whole number > 0 (got {value!r})")
    return value


def _fixed(space: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in space.items() if not isinstance(v, dict)}


def _check_value_types(args: dict[str, Any]) -> None:
    from ultralytics.cfg import check_cfg

    try:
        check_cfg(dict(args))
    except (TypeError, ValueError) as exc:
        raise SpecError(f"training arguments: {str(exc).splitlines()[0]}") from exc


def _pin_optimizer(search_space: dict[str, Any], train_args: dict[str, Any]) -> list[str]:
    """optimizer=auto picks its own learning rate and momentum, which would make lr0/momentum dead keys."""
    searched = {"lr0", "momentum"} & set(spaces.searched_keys(search_space))
    if searched and "optimizer" not in search_space and train_args.get("optimizer", "auto") == "auto":
        train_args["optimizer"] = "SGD"
        return [f"{' and '.join(sorted(searched))} searched but optimizer=auto ignores them: "
                "using optimizer=SGD (set optimizer=... to choose)"]
    return []


def _check_gpus(gpu_per_trial: float | None, resources: Resources) -> float:
    if gpu_per_trial is None:
        return 1.0 if resources.gpus else 0.0
    if isinstance(gpu_per_trial, bool) or not isinstance(gpu_per_trial, (int, float)) or gpu_per_trial < 0:
        raise SpecError(f"gpu_per_trial must be a number >= 0 (got {gpu_per_trial!r}): e.g. 1, 0.5 or 0.25")
    if gpu_per_trial > 1 and not float(gpu_per_trial).is_integer():
        raise SpecError(f"gpu_per_trial {gpu_per_trial} above 1 must be whole: use 1, 2, ... or a fraction below 1")
    if gpu_per_trial > resources.gpus:
        raise SpecError(
            f"gpu_per_trial {gpu_per_trial} is more than the {resources.gpus} GPU(s) present: "
            f"use at most {resources.gpus}" + (" (0 trains on the CPU)" if not resources.gpus else "")
        )
    return float(gpu_per_trial)


def _check_cpus(cpus_per_trial: float | None, gpu_per_trial: float, resources: Resources) -> float:
    if cpus_per_trial is None:
        if gpu_per_trial:  # share the CPUs among the trials the GPUs can hold at once
            slots = max(1, math.floor(resources.gpus / gpu_per_trial))
            return float(max(1, resources.cpus // slots))
        return 1.0  # CPU-only: one trial per core gives ASHA the most trials in flight
    if isinstance(cpus_per_trial, bool) or not isinstance(cpus_per_trial, (int, float)) or cpus_per_trial <= 0:
        raise SpecError(f"cpus_per_trial must be a number > 0 (got {cpus_per_trial!r})")
    if cpus_per_trial > resources.cpus:
        raise SpecError(
            f"cpus_per_trial {cpus_per_trial} is more than the {resources.cpus} CPU(s) present: "
            f"use at most {resources.cpus}"
        )
    return float(cpus_per_trial)


def _check_storage(storage: str | Path) -> str:
    """The storage folder must be creatable and writable; probe it without leaving anything behind."""
    path = Path(storage).expanduser().resolve()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise SpecError(f"storage {path} is not usable: {existing} is a file; choose another --storage folder")
    try:
        probe = tempfile.mkdtemp(prefix=".hpctune-probe-", dir=existing)
        os.rmdir(probe)
    except OSError as exc:
        raise SpecError(
            f"storage {path} is not writable ({exc.strerror}): choose a folder you can write with --storage"
        ) from None
    return str(path)


def _check_wandb(options: dict[str, Any] | None, name: str) -> dict[str, Any]:
    """W&B settings; the API key is never part of them (W&B reads it from its own login)."""
    if not options:
        return {}
    mode = options.get("mode") or "auto"
    if mode not in {"online", "offline", "auto"}:
        raise SpecError(f"wandb mode '{mode}' is not one of online, offline, auto: e.g. --wandb-mode offline")
    return {
        "project": options.get("project") or "hpctune", "entity": options.get("entity"),
        "group": options.get("group") or name, "mode": mode,
    }
