"""Drive one search from its run directory: build the Tuner, or restore it, and run it to the end.

Everything needed is read from the run directory, so a search resumes on any nodes after any
number of interruptions. Trials are configured from the configurations sampled into the manifest.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hpctune import asha, offline, progress, scale, tracking
from hpctune.results import SearchResult, write_results
from hpctune.rundir import RunDir
from hpctune.space import to_ray_space
from hpctune.spec import RunSpec
from hpctune.trial import train_trial

log = logging.getLogger(__name__)

# Experiment snapshots, actor reuse and the state kept per trial: see hpctune.scale.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: Ray silent, hpctune.progress prints


def run(run_dir: str | Path, address: str | None = None, on_connect: Callable[[], None] | None = None) -> SearchResult:
    """Run (or resume) the search stored in run_dir; `address` names a running Ray cluster.
    `on_connect` is called once Ray is connected (ray.init() replaces the SIGTERM handler, so a
    caller's signal handlers go in there: see hpctune.interrupt)."""
    rundir = RunDir(run_dir)
    manifest = rundir.read_manifest()
    spec = RunSpec.from_dict(manifest["spec"])
    with rundir.lock(), _log_to(rundir.log_file):
        session = _start_session(rundir, manifest)
        log.info("hpctune session %d of run %s", session, rundir.path)
        env = offline.prepare(rundir.env_dir)
        with _ray(address, env, spec):
            if on_connect is not None:
                on_connect()
            _tuner(rundir, spec, manifest["configs"], session).fit()
        return write_results(rundir, spec)


def _start_session(rundir: RunDir, manifest: dict[str, Any]) -> int:
    """Count the drivers that worked on this run; trial records name the session that wrote them."""
    sessions = manifest.setdefault("sessions", [])
    sessions.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": os.uname().nodename})
    rundir.write_manifest(manifest)
    return len(sessions)


@contextmanager
def _ray(address: str | None, env: dict[str, str], spec: RunSpec) -> Iterator[None]:
    import ray

    from hpctune.ray_driver import refresh_ray_env

    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env}, "log_to_driver": False}
    if address is None:
        # A private local cluster: never attach to a stale one named in /tmp/ray.
        from hpctune.spec import Resources

        if spec.simulate:  # a benchmark: fake GPUs, one CPU each (the stand-in trials sleep)
            from hpctune.simulate import local_resources

            resources = Resources(*local_resources(spec))
        else:
            resources = Resources.detect()
        kwargs.update(address="local", num_cpus=resources.cpus, num_gpus=resources.gpus, include_dashboard=False)
    else:
        kwargs["address"] = address
    refresh_ray_env()  # auth settings Ray cached from an earlier cluster in this process are stale
    ray.init(**kwargs)
    try:
        yield
    finally:
        ray.shutdown()


def _tuner(rundir: RunDir, spec: RunSpec, configs: list[dict[str, Any]], session: int):
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    settings = {
        "trials_dir": str(rundir.trials), "model": spec.model, "data": str(rundir.data_yaml if spec.data_config
        else spec.data), "epochs": spec.epochs, "train_args": spec.train_args,
        "gpu_per_trial": spec.gpu_per_trial, "cpus_per_trial": spec.cpus_per_trial, "session": session,
        "simulate": spec.simulate, "metric": spec.metric,
    }
    trainable = tune.with_resources(
        tune.with_parameters(_trainable(spec), settings=settings),
        {"cpu": spec.cpus_per_trial, "gpu": spec.gpu_per_trial},
    )
    scale.apply_ray_env(spec.cpus_per_trial, spec.gpu_per_trial)
    if rundir.has_experiment_state():
        log.info("restoring the search from %s", rundir.experiment)
        scale.prune_stale_states(rundir.experiment)
        tuner = tune.Tuner.restore(str(rundir.experiment), trainable, resume_unfinished=True, resume_errored=True)
        internal = tuner._local_tuner
        keeper = next(cb for cb in internal._run_config.callbacks if isinstance(cb, asha.SchedulerStateKeeper))
        keeper.scheduler = internal._tune_config.scheduler  # the object Ray will schedule with
        return tuner
    scheduler = asha.make_scheduler(
        epochs=spec.epochs, grace_period=spec.grace_period, reduction_factor=spec.reduction_factor,
    )
    return tune.Tuner(
        trainable,
        param_space=to_ray_space(spec.space),  # the values themselves come from the manifest
        tune_config=tune.TuneConfig(
            scheduler=scheduler,
            search_alg=BasicVariantGenerator(points_to_evaluate=[dict(c) for c in configs]),
            num_samples=len(configs),
            trial_dirname_creator=scale.dirname_creator(),
            reuse_actors=scale.reuse_actors(),
        ),
        run_config=tune.RunConfig(
            name=rundir.experiment.name,
            storage_path=str(rundir.path),
            callbacks=[
                asha.SchedulerStateKeeper(scheduler, rundir.asha_rungs),
                *tracking.callbacks(spec, rundir),
                *progress.callbacks(spec, rundir),
                *scale.callbacks(spec.metric),
            ],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=2),
            verbose=progress.ray_verbosity(),
        ),
    )


def _trainable(spec: RunSpec) -> Callable[..., None]:
    """The YOLO trainable, or the stand-in of hpctune.simulate for a simulated (benchmark) run."""
    if spec.simulate:
        from hpctune.simulate import simulated_trial

        return simulated_trial
    return train_trial


@contextmanager
def _log_to(file: Path) -> Iterator[None]:
    handler = logging.FileHandler(file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
