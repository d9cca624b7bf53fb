"""User arguments of a new search, checked against the installed Ultralytics.

`build_spec` turns user arguments (Ultralytics' tune() names) into a RunSpec, raising an
HpctuneError subclass with the input and the fix for every mistake a user can make.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from hpctune.errors import SpecError
from hpctune.run.spec import UNLIMITED_TRIALS, Resources, RunSpec
from hpctune.run.warmstart import check_source
from hpctune.slurm.timelimit import parse_time
from hpctune.yolo import space as spaces
from hpctune.yolo.data import resolve_data, resolve_model
from hpctune.yolo.optimizer import lr0_range, resolve_auto

log = logging.getLogger(__name__)

TASK_METRIC = {
    "detect": "metrics/mAP50-95(B)",
    "obb": "metrics/mAP50-95(B)",
    "segment": "metrics/mAP50-95(M)",
    "pose": "metrics/mAP50-95(P)",
    "classify": "metrics/accuracy_top1",
}
_SUFFIX = {"detect": "(B)", "obb": "(B)", "segment": "(M)", "pose": "(P)"}
METRIC_NAMES = ("mAP50-95", "mAP50", "fitness", "top1", "top5")
SEARCH_ALGS = ("auto", "evolve", "tpe", "optuna", "random")
DEFAULT_SEARCH_ALG = "auto"
# `auto`: evolve below this many trials, tpe from it on. At 8 trials on real YOLO over 10 seeds evolve's mean
# was above random's (scripts/bench_search_quality.py: 0.107 against 0.097, better on 2 seeds, worse on 2: a
# tie within the noise) and tpe the worst (seeds 0-4); from 30 trials tpe beats random on most seeds of a synthetic
# objective (scripts/bench_searcher_feedback.py), and on real YOLO at 30 trials on 2 of 3.
# Figures: README, "Search quality".
MODEL_BASED_FROM = 30
# Set by hpctune for every trial; a user value would break the run directory or the search.
RESERVED_TRAIN_ARGS = {"project", "name", "resume", "exist_ok", "mode", "tune", "device"}


def build_spec(
    *,
    model: str = "yolov8n.yaml",
    data: str | None = None,
    space: str | Path | dict | None = None,
    grace_period: int = 10,
    gpu_per_trial: float | None = None,
    max_samples: int | None = 10,
    train_args: dict[str, Any] | None = None,
    epochs: int | None = None,
    reduction_factor: int = 3,
    seed: int = 0,
    name: str | None = None,
    storage: str | Path = "runs/hpctune",
    cpus_per_trial: float | None = None,
    resources: Resources | None = None,
    wandb: dict[str, Any] | None = None,
    search_alg: str | None = None,
    metric: str | None = None,
    iterations: int | None = None,
    final_epochs: int = 0,
    final_top_k: int = 1,
    time_budget: str | None = None,
    warm_start: str | Path | None = None,
) -> RunSpec:
    """Validate the arguments of a new search and resolve them into a RunSpec. Writes nothing.
    `iterations` is Ultralytics' name for the number of trials (max_samples)."""
    train_args = dict(train_args or {})
    if "iterations" in train_args:  # `iterations=8` typed as a training argument, as with model.tune()
        iterations = train_args.pop("iterations")
    if iterations is not None:
        max_samples = iterations
    time_budget_s = 60.0 * parse_time(time_budget) if time_budget else 0.0
    if max_samples is None:  # not given: a time budget decides how many trials run
        max_samples = UNLIMITED_TRIALS if time_budget_s else 10
    search_alg = train_args.pop("search_alg", None) or search_alg or DEFAULT_SEARCH_ALG
    if search_alg not in SEARCH_ALGS:
        raise SpecError(f"search algorithm '{search_alg}' is unknown: use one of {', '.join(SEARCH_ALGS)}")
    search_alg = "tpe" if search_alg == "optuna" else search_alg
    bad = sorted(RESERVED_TRAIN_ARGS & set(train_args))
    if bad:
        raise SpecError(f"training argument '{bad[0]}' is set by hpctune for each trial: remove it")
    unknown = sorted(set(train_args) - spaces.training_argument_names())
    if unknown:
        raise SpecError(f"'{unknown[0]}' is not an ultralytics training argument: remove it or fix its name")
    model = train_args.pop("model", None) or model
    data = train_args.pop("data", None) or data
    if epochs is not None and "epochs" in train_args and train_args["epochs"] != epochs:
        raise SpecError(f"epochs given twice ({epochs} and epochs={train_args['epochs']}): keep one of them")
    epochs = _positive_int("epochs", epochs if epochs is not None else train_args.pop("epochs", 100))
    train_args.pop("epochs", None)
    if data is None:
        raise SpecError("no dataset given: pass data=path/to/data.yaml")
    if not isinstance(max_samples, int) or isinstance(max_samples, bool) or not 0 < max_samples <= UNLIMITED_TRIALS:
        raise SpecError(f"max_samples must be a whole number from 1 to {UNLIMITED_TRIALS} (got {max_samples}): "
                        "e.g. --max-samples 10")
    if search_alg == "auto":  # an earlier run's results (--warm-start) are for a model to learn from
        search_alg = "tpe" if max_samples >= MODEL_BASED_FROM or warm_start else "evolve"
    grace_period = _positive_int("grace_period", grace_period)
    if grace_period > epochs:
        raise SpecError(
            f"grace_period {grace_period} is larger than epochs {epochs}: lower --grace-period or raise epochs"
        )
    if final_epochs:
        final_epochs = _positive_int("final_epochs", final_epochs)
    final_top_k = _positive_int("final_top_k", final_top_k)
    if final_top_k > max_samples:
        raise SpecError(f"final_top_k {final_top_k} is more than the {max_samples} trials: lower --final-top-k")
    reduction_factor = _positive_int("reduction_factor", reduction_factor)
    if reduction_factor < 2:
        raise SpecError(f"reduction_factor must be >= 2 (got {reduction_factor}): 3 is the usual choice")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise SpecError(f"seed must be a whole number from 0 to 2**32 - 1 (got {seed!r}): e.g. --seed 1")

    space_name = spaces.DEFAULT_SPACE_NAME if space is None else space if space in spaces.NAMED_SPACES else None
    search_space = spaces.load_space(space)
    overlap = sorted(set(search_space) & set(train_args))
    notes = [spaces.named_space_note(space_name)] if space_name else []
    if overlap and space_name:  # key=value fixes a key of a named space, as with Ultralytics' tuners
        search_space = {k: v for k, v in search_space.items() if k not in overlap}
        notes.append(f"space {space_name}: {', '.join(overlap)} fixed by your arguments, not searched")
    elif overlap:
        raise SpecError(f"'{overlap[0]}' is both searched and fixed in train_args: keep one of them")
    reserved = sorted((RESERVED_TRAIN_ARGS | {"epochs", "data", "model"}) & set(search_space))
    if reserved:
        raise SpecError(f"'{reserved[0]}' cannot be searched (hpctune sets it for each trial): remove it from "
                        "the space")
    _check_value_types({**train_args, **_fixed(search_space)})

    resources = resources or Resources.detect()
    gpu_per_trial = _check_gpus(gpu_per_trial, resources)
    cpus_per_trial = _check_cpus(cpus_per_trial, gpu_per_trial, resources)

    model, task = resolve_model(model, train_args.get("task"))
    data_path, data_config = resolve_data(data, task)
    metric = _task_metric(metric, task)
    given_keys = set(search_space)  # before _resolve_optimizer adds the keys the baseline needs
    baseline_values, optimizer_notes = _resolve_optimizer(search_space, train_args, data_config, epochs,
                                                          adapt_space=space_name == "ultralytics")
    notes += optimizer_notes
    if space_name:
        notes += spaces.range_notes(search_space)
    baseline = spaces.baseline_config(search_space, baseline_values) if spaces.searched_keys(search_space) else {}
    # Ultralytics' genetic Tuner starts from the documented defaults under the pinned optimizer (lr0 0.01, not
    # auto's fitted rate): that point runs second, so the search also starts where that tuner does.
    tuner_start = spaces.baseline_config(search_space, {}) if baseline_values and baseline else {}
    starts = [tuner_start] if tuner_start and tuner_start != baseline else []
    warm = check_source(warm_start, spaces.searched_keys(search_space), metric) if warm_start else None
    storage = _check_storage(storage)
    name = name or time.strftime("tune-%Y%m%d-%H%M%S")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}", str(name)):
        raise SpecError(f"name {str(name)[:40]!r} must be a plain folder name of at most 100 letters, digits, "
                        "'.', '_', '+', '-': use --name my-search")
    if (Path(storage) / name).exists():
        raise SpecError(
            f"run directory {Path(storage) / name} already exists: `hpctune resume` it or choose another --name"
        )
    for note in filter(None, notes):  # said only once the whole input is valid: an error stays one line
        log.warning(note)
    # One seed makes the whole run reproducible, as `model.tune(seed=...)` does for training: every trial trains
    # with it (the same for all, so configurations compare on equal terms) unless train_args give their own.
    if "seed" not in search_space:
        train_args.setdefault("seed", seed)
    train_args.setdefault("plots", False)  # per-trial plots cost seconds each and nobody reads them
    train_args.setdefault("workers", min(8, max(0, int(cpus_per_trial) - 1)))
    return RunSpec(
        model=model, data=data_path, task=task, metric=metric, epochs=epochs,
        grace_period=grace_period, reduction_factor=reduction_factor, max_samples=max_samples,
        gpu_per_trial=gpu_per_trial, cpus_per_trial=cpus_per_trial, seed=seed, name=name,
        storage=storage, space=search_space, train_args=train_args, data_config=data_config,
        wandb=_check_wandb(wandb, name), search_alg=search_alg, baseline=baseline, starts=starts,
        mutation_gains=_mutation_gains(search_space, set(search_space) - given_keys) if search_alg == "evolve" else {},
        final_epochs=final_epochs, final_top_k=final_top_k, time_budget_s=time_budget_s,
        warm_start=str(warm) if warm else "",
    )


def _mutation_gains(search_space: dict[str, Any], added: set[str]) -> dict[str, float]:
    """Ultralytics' genetic Tuner's gains for the searched keys (momentum moves 0.3 of the usual step: a full
    step from its default 0.937 reaches the top of the range, beta1 0.98, which trained badly in
    bench_search_quality's runs), and 0 (a child keeps its parent's value) for the keys hpctune `added` to the
    space only so that the baseline lies in it: warmup_bias_lr, auto's 0, which Ultralytics' tuners keep at
    0.1. In bench_search_quality's runs with every trial trained fully, children with it mutated below 0.1
    averaged mAP50-95 0.041 against 0.056 for those at 0.1."""
    searched = set(spaces.searched_keys(search_space))
    gains = {key: gain for key, gain in spaces.ultralytics_mutation_gains().items() if key in searched}
    return gains | {key: 0.0 for key in added & searched}


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


def _task_metric(metric: str | None, task: str) -> str:
    """The metric to maximise: a short name (mAP50-95, mAP50, fitness; top1, top5 for classify) or a metric key."""
    if metric is None:
        return TASK_METRIC[task]
    if metric == "fitness":
        return "fitness"
    if task == "classify" and metric in {"top1", "top5"}:
        return f"metrics/accuracy_{metric}"
    if task != "classify" and metric in {"mAP50-95", "mAP50"}:
        return f"metrics/{metric}{_SUFFIX[task]}"
    if metric.startswith("metrics/"):
        return metric
    names = "top1, top5, fitness" if task == "classify" else "mAP50-95, mAP50, fitness"
    raise SpecError(f"metric '{metric}' is not one of {names} for a {task} model: e.g. --metric mAP50")


def _resolve_optimizer(search_space: dict[str, Any], train_args: dict[str, Any], data_config: dict[str, Any],
                       epochs: int, adapt_space: bool) -> tuple[dict[str, Any], list[str]]:
    """optimizer=auto ignores lr0 and momentum: pin what auto would choose for this run (see
    hpctune.yolo.optimizer). Returns the baseline's values of the searched keys, and log lines.
    With `adapt_space` (the named `ultralytics` space), lr0's range is set around the resolved rate, and
    warmup_bias_lr, which auto sets to 0 for AdamW, is searched from there up to its documented 0.1."""
    if "optimizer" in search_space or train_args.get("optimizer", "auto") != "auto":
        return {}, []
    from ultralytics.cfg import DEFAULT_CFG_DICT

    resolved = resolve_auto(data_config, train_args, epochs)
    auto_args = resolved.train_args()
    if adapt_space and "warmup_bias_lr" in auto_args and "warmup_bias_lr" not in train_args:
        # Ultralytics' tuners pin the optimizer themselves and keep the documented 0.1; on short training from
        # scratch it decides everything (bench_search_quality data, AdamW lr0 0.01, 10 epochs: mAP50-95 0.138
        # with 0.1, 0.0045 with auto's 0), so it is searched rather than pinned at auto's value.
        search_space.setdefault("warmup_bias_lr", {"uniform": [0.0, float(DEFAULT_CFG_DICT["warmup_bias_lr"])]})
    searched = set(spaces.searched_keys(search_space))
    for key, value in auto_args.items():
        if key not in searched:
            train_args.setdefault(key, value)
    train_args["optimizer"] = resolved.name
    if "lr0" in searched and adapt_space:
        search_space["lr0"] = lr0_range(resolved.lr0, DEFAULT_CFG_DICT["lr0"])
    baseline, notes = {"lr0": resolved.lr0, "momentum": resolved.momentum}, [resolved.note()]
    if "warmup_bias_lr" in searched and "warmup_bias_lr" in auto_args:
        baseline["warmup_bias_lr"] = auto_args["warmup_bias_lr"]  # the untuned run: what auto sets
        notes.append(f"warmup_bias_lr is searched from auto's {auto_args['warmup_bias_lr']:g} up to Ultralytics' "
                     f"documented {DEFAULT_CFG_DICT['warmup_bias_lr']:g} (where its tuners keep it)")
    return baseline, notes


def _check_gpus(gpu_per_trial: float | None, resources: Resources) -> float:
    if gpu_per_trial is None:
        return 1.0 if resources.gpus else 0.0
    if (isinstance(gpu_per_trial, bool) or not isinstance(gpu_per_trial, (int, float))
            or not math.isfinite(gpu_per_trial) or gpu_per_trial < 0):
        raise SpecError(f"gpu_per_trial must be a number >= 0 (got {gpu_per_trial!r}): e.g. 1, 0.5 or 0.25")
    if gpu_per_trial > 1 and not float(gpu_per_trial).is_integer():
        raise SpecError(f"gpu_per_trial {gpu_per_trial} above 1 must be whole: use 1, 2, ... or a fraction below 1")
    if gpu_per_trial > resources.gpus:
        raise SpecError(
            f"gpu_per_trial {gpu_per_trial} is more than the {resources.gpus} GPU(s) present: "
            f"use at most {resources.gpus}" + (" (0 trains on the CPU)" if not resources.gpus else "")
        )
    if gpu_per_trial > 1:
        raise SpecError(
            f"gpu_per_trial {gpu_per_trial:g}: Ultralytics trains on several GPUs with DDP in a subprocess, whose "
            "epochs hpctune cannot checkpoint and report: use 1 GPU per trial (or a fraction to pack several)"
        )
    return float(gpu_per_trial)


def _check_cpus(cpus_per_trial: float | None, gpu_per_trial: float, resources: Resources) -> float:
    if cpus_per_trial is None:
        if gpu_per_trial:  # share the CPUs among the trials the GPUs can hold at once
            slots = max(1, math.floor(resources.gpus / gpu_per_trial))
            return float(max(1, resources.cpus // slots))
        return 1.0  # CPU-only: one trial per core gives ASHA the most trials in flight
    if (isinstance(cpus_per_trial, bool) or not isinstance(cpus_per_trial, (int, float))
            or not math.isfinite(cpus_per_trial) or cpus_per_trial <= 0):
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
