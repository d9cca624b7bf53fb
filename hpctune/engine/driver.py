"""Drive one search from its run directory: build the Tuner, or restore it, and run it to the end.

Everything needed is read from the run directory, so a search resumes on any nodes after any
number of interruptions. Configurations come from the searcher (hpctune.engine.searchers), each
recorded when suggested (hpctune.engine.journal); trials run the trainer the spec names
(hpctune.engine.trainers) under hpctune's ASHA (hpctune.engine.asha).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from hpctune import ray_compat
from hpctune.engine import asha, progress, scale, searchers, tracking, trainers
from hpctune.engine.budget import TimeBudget
from hpctune.engine.journal import Journaled
from hpctune.run.results import SearchResult, write_results
from hpctune.run.rundir import RunDir, check_format
from hpctune.run.spec import Resources, RunSpec
from hpctune.run.warmstart import prior_trials

log = logging.getLogger(__name__)

# Experiment snapshots, actor reuse and the state kept per trial: see hpctune.engine.scale.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: Ray silent, hpctune.engine.progress prints


def run(run_dir: str | Path, address: str | None = None, on_connect: Callable[[], None] | None = None,
        job_end: float | None = None) -> SearchResult:
    """Run (or resume) the search stored in run_dir; `address` names a running Ray cluster.
    `on_connect` is called once Ray is connected (ray.init() replaces the SIGTERM handler, so a
    caller's signal handlers go in there: see hpctune.engine.interrupt). `job_end` (a time): when this
    job is stopped; no trial starts that could not finish an epoch before then (a pause: the search goes
    on in the next job, where its epochs are kept)."""
    rundir = RunDir(run_dir)
    manifest = rundir.read_manifest()
    check_format(rundir, manifest)
    spec = RunSpec.from_dict(manifest["spec"])
    trainer = trainers.load(spec.trainer)
    with rundir.lock(), _log_to(rundir.log_file):
        session = _start_session(rundir, manifest)
        log.info("hpctune session %d of run %s", session, rundir.path)
        env = trainer.prepare_env(rundir.env_dir)
        with _ray(address, env, trainer, spec):
            if on_connect is not None:
                on_connect()
            grown = len(manifest.get("grown", []))  # growth requests (hpctune.api.grow_run)
            tuner = _tuner(rundir, spec, trainer, session, grown)
            if spec.time_budget_s:  # per job run: counted from this session's start
                Journaled.active.budget = TimeBudget(spec.time_budget_s, spec.grace_period, spec.final_epochs)
            if job_end is not None:  # epochs are kept across jobs: a trial that ends one epoch in time is not lost
                Journaled.active.job_end = TimeBudget(job_end - time.time(), grace_period=1)
            with scale.tuner_patches(trial_ids=lambda: Journaled.active.next_trial_id()), \
                    _search_limit(spec, grown):
                tuner.fit()
            result = write_results(rundir, spec)
            if spec.final_epochs and result.search_finished:
                _final_tuner(rundir, spec, trainer, session, result).fit()
                result = write_results(rundir, spec)
        return result


def _start_session(rundir: RunDir, manifest: dict[str, Any]) -> int:
    """Count the drivers that worked on this run; trial records name the session that wrote them."""
    sessions = manifest.setdefault("sessions", [])
    sessions.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": os.uname().nodename})
    rundir.write_manifest(manifest)
    return len(sessions)


def _search_limit(spec: RunSpec, requests: int) -> AbstractContextManager:
    """A restored search goes on with the manifest's trial cap, and is open again (even if it had
    ended) after a growth request it has not taken in (`hpctune resume --max-samples`, api.grow_run).
    A run never grown needs nothing: Ray restores the cap it was built with, the manifest's."""
    if not requests:
        return nullcontext()

    def limit(total: int, finished: bool) -> tuple[int, bool]:
        reopened = Journaled.active.reopen(requests)
        if reopened:
            log.info("search grown: %d trials (Ray's snapshot had %d%s)", spec.max_samples, total,
                     ", finished" if finished else "")
        return spec.max_samples, finished and not reopened

    return ray_compat.restored_search_limit(limit)


@contextmanager
def _ray(address: str | None, env: dict[str, str], trainer, spec: RunSpec) -> Iterator[None]:
    import ray

    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env}, "log_to_driver": False}
    if address is None:
        # A private local cluster: never attach to a stale one named in /tmp/ray.
        resources = Resources(*trainer.local_resources(spec))
        kwargs.update(address="local", num_cpus=resources.cpus, num_gpus=resources.gpus, include_dashboard=False)
    else:
        kwargs["address"] = address
    ray_compat.refresh_cached_env()  # auth settings Ray cached from an earlier cluster in this process are stale
    ray.init(**kwargs)
    try:
        yield
    finally:
        ray.shutdown()


def _trainable(rundir: RunDir, spec: RunSpec, trainer, session: int, trials_dir: Path, epochs: int):
    from ray import tune

    settings = {
        "trials_dir": str(trials_dir), "model": spec.model, "data": str(rundir.data_yaml if spec.data_config
        else spec.data), "epochs": epochs, "train_args": spec.train_args,
        "gpu_per_trial": spec.gpu_per_trial, "cpus_per_trial": spec.cpus_per_trial, "session": session,
        "simulate": spec.simulate, "metric": spec.metric,
    }
    return tune.with_resources(
        tune.with_parameters(trainer.trainable, settings=settings),
        {"cpu": spec.cpus_per_trial, "gpu": spec.gpu_per_trial},
    )


def _final_tuner(rundir: RunDir, spec: RunSpec, trainer, session: int, result: SearchResult):
    """The best `final_top_k` configurations trained for `final_epochs`, one trial each, checkpointed
    every epoch like the search's trials (RUN_DIR/final/), restored after an interruption."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    trainable = _trainable(rundir, spec, trainer, session, rundir.final_trials, spec.final_epochs)
    if rundir.has_experiment_state(rundir.final_experiment):
        log.info("restoring the final training from %s", rundir.final_experiment)
        return tune.Tuner.restore(str(rundir.final_experiment), trainable, resume_unfinished=True,
                                  resume_errored=True)
    configs = result.top_configs(spec.final_top_k)
    log.info("final training: the best %d configuration(s), %d epochs each", len(configs), spec.final_epochs)
    return tune.Tuner(
        trainable,
        param_space=dict(configs[0]),  # the values themselves come from points_to_evaluate
        tune_config=tune.TuneConfig(
            search_alg=BasicVariantGenerator(points_to_evaluate=[dict(c) for c in configs]),
            num_samples=len(configs), trial_dirname_creator=scale.dirname_creator(),
        ),
        run_config=tune.RunConfig(
            name=rundir.final_experiment.name, storage_path=str(rundir.final_experiment.parent),
            callbacks=scale.callbacks(spec.metric), checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=2), verbose=progress.ray_verbosity(),
        ),
    )


def _tuner(rundir: RunDir, spec: RunSpec, trainer, session: int, grown: int = 0):
    from ray import tune

    trainable = _trainable(rundir, spec, trainer, session, rundir.trials, spec.epochs)
    scale.apply_ray_env(spec.cpus_per_trial, spec.gpu_per_trial)
    if rundir.has_experiment_state():
        log.info("restoring the search from %s", rundir.experiment)
        scale.prune_stale_states(rundir.experiment)
        return tune.Tuner.restore(str(rundir.experiment), trainable, resume_unfinished=True, resume_errored=True)
    scheduler = asha.make_scheduler(
        epochs=spec.epochs, grace_period=spec.grace_period, reduction_factor=spec.reduction_factor,
    )
    searcher = searchers.make_searcher(
        spec.search_alg, space=spec.space, metric=spec.metric, max_epochs=spec.epochs, seed=spec.seed,
        baseline=spec.baseline or None, starts=spec.starts,
        max_trials=spec.max_samples, gains=spec.mutation_gains,
    )
    if spec.warm_start:  # a new search only: a restored searcher has these trials in its state
        learned = searcher.learn(prior_trials(Path(spec.warm_start), spec.metric))
        log.info("warm start: the searcher learned from %d trials of %s", learned, spec.warm_start)
    log.info("search: %s, %d trials%s%s", spec.search_alg, spec.max_samples,
             ", the first one the baseline (defaults + your arguments)" if spec.baseline else "",
             ", the next at Ultralytics' documented defaults (where its Tuner starts)" if spec.starts else "")
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            scheduler=scheduler,
            search_alg=Journaled(searcher, rundir.suggestions, spec.baseline, grown),
            num_samples=spec.max_samples,
            trial_dirname_creator=scale.dirname_creator(),
            reuse_actors=scale.reuse_actors(),
        ),
        run_config=tune.RunConfig(
            name=rundir.experiment.name,
            storage_path=str(rundir.path),
            callbacks=[
                asha.RungKeeper(scheduler, rundir.asha_rungs),
                *tracking.callbacks(spec, rundir),
                *progress.callbacks(spec, rundir),
                *scale.callbacks(spec.metric),
                *getattr(trainer, "callbacks", lambda spec: [])(spec),
            ],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=2),
            verbose=progress.ray_verbosity(),
        ),
    )


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
