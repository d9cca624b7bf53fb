"""Canary: every private name of Ray that hpctune.ray_compat touches still exists in the installed Ray.
Fails the day a Ray release renames one; then update hpctune/ray_compat.py and TESTED_RAY together."""

from __future__ import annotations

import importlib

import pytest

from hpctune import ray_compat


def _resolve(dotted: str):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


@pytest.mark.parametrize("name", [
    "ray.tune.execution.experiment_state._ExperimentCheckpointManager._update_auto_checkpoint_time",
    "ray.tune.execution.tune_controller.TuneController._maybe_reuse_cached_actor",
    "ray._raylet.GcsClient",  # get_all_node_info is exercised by tests/test_ray_cluster_slurm.py
    "ray.core.generated.gcs_pb2.GcsNodeInfo.ALIVE",
    "ray._raylet.Config.initialize",
    "ray._raylet.AuthenticationTokenLoader.instance",
    "ray._private.ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER",
    "ray.tune.search.search_generator.SearchGenerator.restore_from_dir",
])
def test_private_name_exists(name):
    assert _resolve(name) is not None


def test_installed_ray_is_a_tested_version():
    assert ray_compat.tested(), f"Ray {ray_compat.ray_version()} is not in TESTED_RAY {ray_compat.TESTED_RAY}"


def test_trial_metadata_has_the_fields_lean_state_trims():
    from ray.tune.experiment import Trial

    trial = Trial("__fake", config={}, stub=True)
    meta = trial.run_metadata
    assert hasattr(meta, "_n_steps") and hasattr(meta, "metric_n_steps") and hasattr(meta, "metric_analysis")
    ray_compat.drop_running_averages(trial)
    assert meta._n_steps == ()
    ray_compat.compact_finished(trial, {"epoch"})
    assert not ray_compat._warned  # nothing was skipped


def test_tuner_patches_are_scoped_and_undone():
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager
    from ray.tune.execution.tune_controller import TuneController

    before = (_ExperimentCheckpointManager._update_auto_checkpoint_time, TuneController._maybe_reuse_cached_actor)
    with ray_compat.tuner_patches(adaptive_period=True, reuse_guard=True):
        inside = (_ExperimentCheckpointManager._update_auto_checkpoint_time,
                  TuneController._maybe_reuse_cached_actor)
        assert inside[0] is not before[0] and inside[1] is not before[1]
    after = (_ExperimentCheckpointManager._update_auto_checkpoint_time, TuneController._maybe_reuse_cached_actor)
    assert after == before


def _search_generator(folder):
    from ray.tune.search.search_generator import SearchGenerator

    from hpctune.engine.journal import Journaled
    from hpctune.engine.searchers import make_searcher

    searcher = make_searcher("random", space={"lr0": {"uniform": [0.001, 0.1]}}, metric="m", max_epochs=3, seed=0,
                             baseline=None)
    return SearchGenerator(Journaled(searcher, folder / "suggestions.jsonl", None))


def test_restored_search_limit_lifts_the_saved_cap_and_is_undone(tmp_path):
    from ray.tune.search.search_generator import SearchGenerator

    saved = _search_generator(tmp_path)
    assert hasattr(saved, "_total_samples") and hasattr(saved, "_finished")
    saved.set_state({"counter": 4, "total_samples": 4, "finished": True, "experiment": None})
    saved.save_to_dir(str(tmp_path), "2026-01-01_00-00-00")
    original = SearchGenerator.restore_from_dir
    seen = []

    def limit(total, finished):
        seen.append((total, finished))
        return total + 3, False

    with ray_compat.restored_search_limit(limit):
        grown = _search_generator(tmp_path)
        grown.restore_from_dir(str(tmp_path))
    assert SearchGenerator.restore_from_dir is original
    assert seen == [(4, True)]  # what Ray restored from the snapshot
    assert grown.total_samples == 7 and not grown.is_finished() and grown.get_state()["counter"] == 4
    plain = _search_generator(tmp_path)
    plain.restore_from_dir(str(tmp_path))
    assert plain.total_samples == 4 and plain.is_finished()
