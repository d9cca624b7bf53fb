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
from hpctune.run.results import SearchResult, load_result
from hpctune.run.rundir import FORMAT, MANIFEST, RunDir, atomic_write_json, dir_mode
from hpctune.run.spec import RunSpec
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

    Keywords of `hpctune.yolo.arguments.build_spec` are search settings (epochs, search_alg: tpe/optuna
    (default), evolve or random; iterations, Ultralytics' name for max_samples; metric, seed, name, storage,
    reduction_factor, cpus_per_trial, wandb); any other keyword is a training argument, as in
    `model.tune(data=..., epochs=30, imgsz=320)`. `address` names a running Ray cluster."""
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


def resume(run_dir: str | Path, address: str | None = None) -> SearchResult:
    """Continue an interrupted search from its run directory."""
    from hpctune.jobs import local

    RunDir(run_dir).read_manifest()  # a clear error before Ray starts, if this is no run
    return local.run_search(run_dir, address=address)


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
