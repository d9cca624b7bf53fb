"""The Python API: Ultralytics' tune() arguments, a run directory per search, resume from it alone."""

from __future__ import annotations

import importlib.metadata
import inspect
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from hpctune.errors import SpecError
from hpctune.run.journal import read_journal
from hpctune.run.results import SearchResult, load_result
from hpctune.run.rundir import FORMAT, MANIFEST, RunDir, atomic_write_json, check_format, dir_mode
from hpctune.run.spec import UNLIMITED_TRIALS, RunSpec
from hpctune.slurm.timelimit import parse_time
from hpctune.yolo.arguments import build_spec
from hpctune.yolo.data import write_data_yaml

_PACKAGES = ("hpctune", "ultralytics", "ray", "torch", "submitit", "wandb", "optuna")
# build_spec's keywords beyond Ultralytics' tune() arguments (resources are detected, not given)
SEARCH_SETTINGS = set(inspect.signature(build_spec).parameters) - {
    "model", "data", "space", "grace_period", "gpu_per_trial", "max_samples", "train_args", "resources"}


def tune(
    model: str = "yolov8n.yaml",
    data: str | None = None,
    space: str | Path | dict | None = None,
    grace_period: int = 10,
    gpu_per_trial: float | None = None,
    max_samples: int = 10,
    train_args: dict[str, Any] | None = None,
    *,
    address: str | None = None,
    **options: Any,
) -> SearchResult:
    """Run an ASHA search over YOLO training, with Ultralytics' `model.tune()` arguments.

    Keywords of `hpctune.yolo.arguments.build_spec` are search settings (epochs, search_alg: auto
    (default: evolve below 30 trials, tpe from 30), evolve, tpe/optuna or random; iterations, Ultralytics'
    name for max_samples; metric, seed, name, storage, reduction_factor, cpus_per_trial, wandb); any other
    keyword is a training argument, as in `model.tune(data=..., epochs=30, imgsz=320)`. `address` names a
    running Ray cluster."""
    from hpctune.jobs import local

    settings = {key: options.pop(key) for key in list(options) if key in SEARCH_SETTINGS}
    spec = build_spec(
        model=model, data=data, space=space, grace_period=grace_period, gpu_per_trial=gpu_per_trial,
        max_samples=max_samples, train_args={**(train_args or {}), **options}, **settings,
    )
    local.check_local_run(spec, address)
    rundir = create_run(spec)
    return local.run_search(rundir.path, address=address)


def create_run(spec: RunSpec) -> RunDir:
    """Write a new run directory for a validated spec, all at once: it appears complete or not at all."""
    target = spec.run_dir
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}.", dir=target.parent))
    try:
        manifest = {
            "format": FORMAT,
            "spec": spec.to_dict(),
            "versions": _versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "sessions": [],
        }
        if spec.data_config:
            write_data_yaml(spec.data_config, staging / "data.yaml")
        atomic_write_json(staging / MANIFEST, manifest)
        os.chmod(staging, dir_mode())  # mkdtemp makes it 0700: honour the umask as mkdir does
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return RunDir(target)


def resume(run_dir: str | Path, address: str | None = None, *, max_samples: int | None = None,
           time_budget: str | None = None) -> SearchResult:
    """Continue a search from its run directory. `max_samples` (or `time_budget`, D-HH:MM:SS) grows an
    interrupted or finished search: see `grow_run`."""
    from hpctune.jobs import local

    rundir = RunDir(run_dir)
    rundir.read_manifest()  # a clear error before Ray starts, if this is no run
    if max_samples is not None or time_budget is not None:
        grow_run(rundir, max_samples=max_samples, time_budget=time_budget)
    return local.run_search(rundir.path, address=address)


def grow_run(rundir: RunDir, max_samples: int | None = None, time_budget: str | None = None) -> None:
    """Set the trial cap of a search to `max_samples`, at least the trials already created (a time
    budget alone: no cap, the budget decides, as for a new search), recorded in its manifest, so that
    every later resume keeps it.
    The next driver goes on from the searcher's and ASHA's restored state: finished trials stay
    finished, and exactly `max_samples` minus the trials already created are added."""
    _grown_manifest(rundir, max_samples, time_budget)  # a user error leaves the run untouched, lock file included
    with rundir.lock():  # no driver may be running while the spec changes
        rundir.write_manifest(_grown_manifest(rundir, max_samples, time_budget))


def _grown_manifest(rundir: RunDir, max_samples: int | None, time_budget: str | None) -> dict[str, Any]:
    """The run's manifest with the new limits and the request appended to its "grown" list; checked first."""
    manifest = rundir.read_manifest()
    check_format(rundir, manifest)
    spec = manifest["spec"]
    budget_s = 60.0 * parse_time(time_budget) if time_budget is not None else spec.get("time_budget_s", 0.0)
    cap = UNLIMITED_TRIALS if max_samples is None else max_samples
    if isinstance(cap, bool) or not isinstance(cap, int) or not 0 < cap <= UNLIMITED_TRIALS:
        raise SpecError(f"max_samples must be a whole number from 1 to {UNLIMITED_TRIALS} (got {cap!r}): "
                        "e.g. --max-samples 20")
    created = len(read_journal(rundir.suggestions))
    if cap < created:
        raise SpecError(f"max_samples {cap} is below the {created} trials run {rundir.path} already created: "
                        f"give --max-samples {created} or more")
    if cap < spec.get("final_top_k", 1):
        raise SpecError(f"max_samples {cap} is below the final training's top {spec['final_top_k']}: "
                        f"give --max-samples {spec['final_top_k']} or more")
    if rundir.has_experiment_state(rundir.final_experiment):
        raise SpecError(f"run {rundir.path} has a final training (final/), which a grown search would leave "
                        "behind: start a new search")
    spec.update(max_samples=cap, time_budget_s=budget_s)
    manifest.setdefault("grown", []).append({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "max_samples": cap,
                                             "time_budget_s": budget_s, "trials_before": created})
    return manifest


def train(run_dir: str | Path, epochs: int, top_k: int = 1, address: str | None = None) -> SearchResult:
    """Train the best `top_k` configurations of a search for `epochs` (RUN_DIR/final/): the search
    is resumed first if it did not finish; an interrupted final training continues where it stopped."""
    from hpctune.jobs import local

    rundir = RunDir(run_dir)
    with rundir.lock():  # no driver may be running while the spec changes
        _set_final(rundir, epochs, top_k)
    return local.run_search(rundir.path, address=address)


def _set_final(rundir: RunDir, epochs: int, top_k: int) -> None:
    manifest = rundir.read_manifest()
    spec = manifest["spec"]
    if rundir.has_experiment_state(rundir.final_experiment) and (spec.get("final_epochs"), spec.get(
            "final_top_k")) != (epochs, top_k):
        raise SpecError(f"run {rundir.path} has a final training of {spec['final_epochs']} epochs (top "
                        f"{spec['final_top_k']}): resume it with those, or start a new search")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0:
        raise SpecError(f"epochs must be a whole number > 0 (got {epochs!r}): e.g. --epochs 100")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 0 < top_k <= spec["max_samples"]:
        raise SpecError(f"top_k must be from 1 to the search's {spec['max_samples']} trials (got {top_k!r})")
    spec.update(final_epochs=epochs, final_top_k=top_k)
    rundir.write_manifest(manifest)


def load_run(run_dir: str | Path) -> SearchResult:
    """The outcome of a finished or running search, read from its run directory."""
    return load_result(run_dir)


def _versions() -> dict[str, str]:
    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions
