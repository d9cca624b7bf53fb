"""The one file that touches private names of Ray. Everything else uses Ray's public API.

Each private touch is listed in `TOUCHES` with the feature it serves; tests/unit/test_ray_compat.py
is the canary that fails the day a Ray release renames one of them. Ray versions outside
`TESTED_RAY` get one warning line naming the version and the feature, and the feature is skipped
where skipping costs speed only (snapshot period, actor reuse guard, lean trial state); where it
would cost correctness, the call fails with one line that says so.

Patches of Ray's classes are scoped: `tuner_patches()` and `restored_search_limit()` apply them for
one `Tuner.fit()` of hpctune's and undo them afterwards, so other Tuners of the same process run unaltered.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

from hpctune.errors import HpctuneError

log = logging.getLogger(__name__)

TESTED_RAY = ("2.60",)
TOUCHES = {
    "snapshot period": "ray.tune.execution.experiment_state._ExperimentCheckpointManager._update_auto_checkpoint_time",
    "actor reuse guard": "ray.tune.execution.tune_controller.TuneController._maybe_reuse_cached_actor",
    "trial ids": "ray.tune.experiment.Trial.generate_id (public class; replaced for our fit() only)",
    "search cap": "ray.tune.search.search_generator.SearchGenerator._total_samples, _finished (set after its "
                  "restore_from_dir, for our fit() only)",
    "lean trial state": "ray.tune.experiment.trial.Trial.run_metadata (_n_steps, metric_n_steps, metric_analysis)",
    "cluster membership": "ray._raylet.GcsClient.get_all_node_info, ray.core.generated.gcs_pb2.GcsNodeInfo.ALIVE",
    "cached auth settings": "ray._raylet.Config.initialize, ray._raylet.AuthenticationTokenLoader.reset_cache",
    "failure signal handler": "ray._private.ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER",
}
SNAPSHOT_FACTOR, SNAPSHOT_MIN_S, SNAPSHOT_MAX_S = 19.0, 1.0, 60.0
_warned: set[str] = set()


class RayCompatError(HpctuneError):
    """A private name of Ray that correctness depends on is gone in this Ray version."""


def ray_version() -> str:
    import ray

    return ray.__version__


def tested() -> bool:
    return any(ray_version() == v or ray_version().startswith(v + ".") for v in TESTED_RAY)


def _skip(feature: str, exc: BaseException) -> None:
    if feature not in _warned:
        _warned.add(feature)
        log.warning("Ray %s: %s not available (%s: %s); hpctune is tested with Ray %s and runs without it",
                    ray_version(), feature, type(exc).__name__, exc, ", ".join(TESTED_RAY))


# ---------------------------------------------------------------- scoped Tuner patches
@contextlib.contextmanager
def tuner_patches(adaptive_period: bool, reuse_guard: bool,
                  trial_ids: Callable[[], str] | None = None) -> Iterator[None]:
    """Ray Tune's snapshot period floor and actor reuse, as hpctune wants them, and trial ids from
    `trial_ids` (see hpctune.engine.journal), for the duration of one fit(); undone on exit."""
    undo: list[tuple[Any, str, Any]] = []
    try:
        if trial_ids is not None:
            _patch_trial_ids(undo, trial_ids)
        if adaptive_period:
            _patch_period(undo)
        if reuse_guard:
            _patch_reuse(undo)
        yield
    finally:
        _undo(undo)


def _undo(undo: list[tuple[Any, str, Any]]) -> None:
    for owner, name, original in reversed(undo):
        setattr(owner, name, original)


@contextlib.contextmanager
def restored_search_limit(limit: Callable[[int, bool], tuple[int, bool]]) -> Iterator[None]:
    """For the duration of one fit(): once Ray has restored its search algorithm from the experiment
    snapshot, `limit(total_samples, finished)` gives the trial cap and the finished flag to go on with.

    Ray 2.60's SearchGenerator keeps the cap it was built with (num_samples) and whether the searcher
    said FINISHED in its snapshot, and Tuner.restore takes no new TuneConfig: without this a restored
    search can never grow (`hpctune resume --max-samples`)."""
    undo: list[tuple[Any, str, Any]] = []
    try:
        _patch_search_limit(undo, limit)
        yield
    finally:
        _undo(undo)


def _patch_trial_ids(undo: list, trial_ids: Callable[[], str]) -> None:
    from ray.tune.experiment import Trial

    if not isinstance(inspect.getattr_static(Trial, "generate_id", None), classmethod):
        raise RayCompatError(f"Ray {ray_version()}: Trial.generate_id is gone; trial ids cannot be kept across "
                             f"a restore: install a Ray hpctune is tested with ({', '.join(TESTED_RAY)})")
    original = inspect.getattr_static(Trial, "generate_id")
    Trial.generate_id = classmethod(lambda cls: trial_ids())
    undo.append((Trial, "generate_id", original))


def _patch_search_limit(undo: list, limit: Callable[[int, bool], tuple[int, bool]]) -> None:
    from ray.tune.search.search_generator import SearchGenerator

    original = SearchGenerator.restore_from_dir

    def restore_from_dir(self, dirpath: str) -> None:
        original(self, dirpath)
        _apply_search_limit(self, limit)

    SearchGenerator.restore_from_dir = restore_from_dir
    undo.append((SearchGenerator, "restore_from_dir", original))


def _apply_search_limit(generator, limit: Callable[[int, bool], tuple[int, bool]]) -> None:
    if not (hasattr(generator, "_total_samples") and hasattr(generator, "_finished")):
        raise RayCompatError(f"Ray {ray_version()}: SearchGenerator._total_samples/_finished are gone; a restored "
                             f"search cannot change its trial cap: install a Ray hpctune is tested with "
                             f"({', '.join(TESTED_RAY)}) or start a new search")
    generator._total_samples, generator._finished = limit(generator._total_samples, generator._finished)


def _patch_period(undo: list) -> None:
    try:
        from ray.tune.execution.experiment_state import _ExperimentCheckpointManager as manager

        original = manager._update_auto_checkpoint_time
    except (ImportError, AttributeError) as exc:
        _skip("snapshot period", exc)
        return

    def update(self, time_taken: float) -> None:
        if self._auto_checkpoint_enabled:
            self._checkpoint_period = min(SNAPSHOT_MAX_S, max(SNAPSHOT_MIN_S, time_taken * SNAPSHOT_FACTOR))

    manager._update_auto_checkpoint_time = update
    undo.append((manager, "_update_auto_checkpoint_time", original))


def _patch_reuse(undo: list) -> None:
    """A freed actor never replaces one that is starting (or running); it goes to a staged trial
    whose actor still waits for resources."""
    try:
        from ray.tune.execution.tune_controller import TuneController

        original = TuneController._maybe_reuse_cached_actor
    except (ImportError, AttributeError) as exc:
        _skip("actor reuse guard", exc)
        return

    def reuse(self, trial) -> bool:
        try:
            own = self._trial_to_actor.get(trial)
            if own is None or trial in self._resetting_trials or not self._actor_manager.is_actor_started(own):
                return original(self, trial)
            for other in list(self._staged_trials):  # its actor waits for resources: cheap to drop
                actor = self._trial_to_actor.get(other)
                if (other is not trial and other in self._pending_trials and other not in self._resetting_trials
                        and actor is not None and not self._actor_manager.is_actor_started(actor)
                        and other.placement_group_factory == trial.placement_group_factory):
                    original(self, other)
                    break
            return False  # `trial` keeps its own actor
        except AttributeError as exc:
            _skip("actor reuse guard", exc)
            return original(self, trial)

    TuneController._maybe_reuse_cached_actor = reuse
    undo.append((TuneController, "_maybe_reuse_cached_actor", original))


# ---------------------------------------------------------------- lean trial state
def drop_running_averages(trial) -> None:
    """Ray keeps two deques of running averages per reported value and pickles them into every snapshot."""
    try:
        meta = trial.run_metadata
        if not hasattr(meta, "_n_steps"):
            raise AttributeError("no _n_steps in Ray's trial metadata")
        meta._n_steps = ()  # update_metric keeps min/max/avg/last only
        meta.metric_n_steps = {k: {} for k in meta.metric_n_steps}
    except AttributeError as exc:
        _skip("lean trial state", exc)


def compact_finished(trial, keep: set[str]) -> None:
    """A finished trial keeps the analysis of `keep` only."""
    try:
        meta = trial.run_metadata
        meta.metric_n_steps = {k: v for k, v in meta.metric_n_steps.items() if k in keep}
        meta.metric_analysis = {k: v for k, v in meta.metric_analysis.items() if k in keep}
        trial.invalidate_json_state()
    except AttributeError as exc:
        _skip("lean trial state", exc)


# ---------------------------------------------------------------- cluster bring-up
def alive_node_ips(address: str, clients: dict) -> list[str] | None:
    """IPs of the ALIVE nodes the GCS at `address` knows, None while it does not answer. Asked
    before any driver connects (ray.nodes() needs a connected driver)."""
    try:
        from ray._raylet import GcsClient
        from ray.core.generated import gcs_pb2
    except ImportError as exc:
        raise RayCompatError(
            f"Ray {ray_version()}: cluster membership cannot be read (GcsClient: {exc}); "
            f"install a Ray hpctune is tested with ({', '.join(TESTED_RAY)})"
        ) from None
    try:
        if address not in clients:
            clients[address] = GcsClient(address=address)
        infos = clients[address].get_all_node_info(timeout=2)
        return [i.node_manager_address for i in infos.values() if i.state == gcs_pb2.GcsNodeInfo.ALIVE]
    except Exception:  # noqa: BLE001 - the GCS is starting; try again
        return None


def refresh_cached_env() -> None:
    """Make an already imported ray re-read what it caches at import: RAY_AUTH_* (a cluster's
    token) and RAY_DISABLE_FAILURE_SIGNAL_HANDLER."""
    if "ray" not in sys.modules:
        return
    try:
        from ray._private import ray_constants

        ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True
    except ImportError as exc:
        _skip("failure signal handler", exc)
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError as exc:
        raise RayCompatError(
            f"Ray {ray_version()}: cached auth settings cannot be refreshed ({exc}); "
            f"install a Ray hpctune is tested with ({', '.join(TESTED_RAY)})"
        ) from None
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
