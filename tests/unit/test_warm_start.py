"""Warm starts: a searcher learns an earlier search's trials (SpaceSearcher.learn), read from its run
directory (hpctune.run.warmstart)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from test_searchers import BASELINE, MAX_EPOCHS, NAMES, SPACE, Simulation, distance, fitness, searched, searcher

from hpctune.errors import SpecError
from hpctune.run.warmstart import check_source, prior_trials


def earlier_search(count=25, seed=3) -> list[dict]:
    """The trials of an earlier search of the same space: random configurations, full-length results."""
    rng = np.random.default_rng(seed)
    priors = []
    for _ in range(count):
        config = {**BASELINE, "lr0": float(10 ** rng.uniform(-5, -1)), "momentum": float(rng.uniform(0.6, 0.98))}
        config = {key: config[key] for key in SPACE}
        priors.append({"config": config, "results": {e: fitness(config, e) for e in range(1, MAX_EPOCHS + 1)}})
    return priors


@pytest.mark.parametrize("name", NAMES)
def test_learned_trials_come_before_the_first_suggestion_and_the_baseline_still_runs_first(name):
    search = searcher(name)
    assert search.learn(earlier_search()) == 25
    assert search.suggest("a") == {key: BASELINE[key] for key in SPACE}
    assert sum(1 for t in search.trials.values() if t.get("prior")) == 25


@pytest.mark.parametrize("name", ("tpe", "evolve"))
def test_a_warm_started_search_suggests_nearer_the_optimum_at_once(name):
    def first_distances(warm):
        found = []
        for seed in range(4):
            search = searcher(name, seed=seed, max_trials=40) if name == "tpe" else searcher(name, seed=seed)
            if warm:
                search.learn(earlier_search(seed=seed + 10))
            found.append(np.median([distance(c) for c in Simulation(search, trials=8, seed=seed).run()[1:]]))
        return np.mean(found)

    assert first_distances(warm=True) < first_distances(warm=False)


@pytest.mark.parametrize("name", NAMES)
def test_learned_trials_are_kept_across_a_restore(name, tmp_path):
    search = searcher(name)
    search.learn(earlier_search())
    Simulation(search, trials=4).run()
    path = tmp_path / "state.json"
    search.save(str(path))
    again = searcher(name)
    again.restore(str(path))
    assert [searched(again.suggest(f"n{i}")) for i in range(3)] == [searched(search.suggest(f"n{i}")) for i in range(3)]


def test_trials_outside_the_space_or_without_results_are_left_out():
    priors = earlier_search(3)
    priors[0]["config"]["momentum"] = 0.5  # below this space's 0.6
    priors[1]["results"] = {}
    assert searcher("tpe").learn(priors) == 1


def _run_dir(root, space, metric="metrics/mAP50-95(B)", trials=None):
    """A run directory as hpctune writes it: manifest, journal, per-trial epoch records."""
    root.mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps({"format": 2, "spec": {"space": space, "metric": metric}}))
    with (root / "suggestions.jsonl").open("w") as journal:
        for n, (trial_id, config, values) in enumerate(trials or []):
            journal.write(json.dumps({"trial_id": trial_id, "n": n, "config": config}) + "\n")
            folder = root / "trials" / trial_id
            folder.mkdir(parents=True)
            (folder / "epochs.jsonl").write_text("".join(
                json.dumps({"epoch": e, "metrics": {metric: v}}) + "\n" for e, v in enumerate(values, 1)))
    return root


def test_the_trials_of_a_run_are_read_from_its_directory(tmp_path):
    space = {"lr0": {"loguniform": [1e-4, 1e-1]}, "imgsz": 64}
    run = _run_dir(tmp_path / "old", space, trials=[("a_1", {"lr0": 0.01, "imgsz": 64}, [0.1, 0.2]),
                                                      ("a_2", {"lr0": 0.001, "imgsz": 64}, []),
                                                      ("a_3", {"lr0": 0.003, "imgsz": 64}, [0.05, float("nan")])])
    priors = prior_trials(run, "metrics/mAP50-95(B)")
    assert [p["config"]["lr0"] for p in priors] == [0.01, 0.003]  # a_2 never reported
    assert priors[0]["results"] == {1: 0.1, 2: 0.2} and priors[1]["results"] == {1: 0.05, 2: None}
    assert check_source(run, ["lr0"], "metrics/mAP50-95(B)") == run.resolve()


@pytest.mark.parametrize(("searched_keys", "metric", "message"), [
    (["lr0", "momentum"], "metrics/mAP50-95(B)", "searched lr0, this search lr0, momentum"),
    (["lr0"], "metrics/mAP50(B)", "ranked by metrics/mAP50-95(B), this search by metrics/mAP50(B)"),
])
def test_a_run_that_cannot_teach_this_search_is_refused_in_one_line(tmp_path, searched_keys, metric, message):
    run = _run_dir(tmp_path / "old", {"lr0": {"uniform": [0, 1]}}, trials=[("a_1", {"lr0": 0.5}, [0.1])])
    with pytest.raises(SpecError, match=re.escape(message)):
        check_source(run, searched_keys, metric)
    empty = _run_dir(tmp_path / "empty", {"lr0": {"uniform": [0, 1]}})
    with pytest.raises(SpecError, match="no trial with a result yet"):
        check_source(empty, ["lr0"], "metrics/mAP50-95(B)")
    with pytest.raises(SpecError, match="is not an hpctune run|does not exist"):
        check_source(tmp_path / "nothing", ["lr0"], "metrics/mAP50-95(B)")
