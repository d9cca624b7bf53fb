"""Defaults a search is built with (hpctune.yolo.arguments.build_spec): the searcher for the budget, the seed."""

import pytest
from test_optimizer_range import _spec  # build_spec on the tiny dataset, 8 trials unless told


@pytest.mark.parametrize(("settings", "searcher"), [
    ({"max_samples": 8}, "evolve"),  # too few trials for a model to pay (bench_search_quality: evolve best)
    ({"max_samples": 29}, "evolve"),
    ({"max_samples": 30}, "tpe"),
    ({"max_samples": None, "time_budget": "1:00:00"}, "tpe"),  # the budget decides: open-ended
    ({"max_samples": 8, "search_alg": "tpe"}, "tpe"),  # asked for: kept
    ({"max_samples": 8, "search_alg": "optuna"}, "tpe"),
    ({"max_samples": 100, "search_alg": "evolve"}, "evolve"),
])
def test_auto_picks_evolve_for_small_budgets_and_tpe_from_30_trials(tiny_data, tmp_path, settings, searcher):
    assert _spec(tiny_data, tmp_path, **settings).search_alg == searcher


def test_the_seed_seeds_every_trials_training_unless_given(tiny_data, tmp_path):
    assert _spec(tiny_data, tmp_path, seed=5).train_args["seed"] == 5
    assert _spec(tiny_data, tmp_path, seed=5, train_args={"seed": 2}).train_args["seed"] == 2


def test_evolve_gets_ultralytics_mutation_gains_for_the_keys_it_searches(tiny_data, tmp_path):
    # warmup_bias_lr (searched from auto's 0 to 0.1 only so that the baseline lies in the space) is not mutated
    assert _spec(tiny_data, tmp_path).mutation_gains == {"momentum": 0.3, "warmup_bias_lr": 0.0}
    assert _spec(tiny_data, tmp_path, train_args={"momentum": 0.9, "warmup_bias_lr": 0.1}).mutation_gains == {}
    assert _spec(tiny_data, tmp_path, search_alg="tpe").mutation_gains == {}


def test_evolve_mutates_warmup_bias_lr_when_the_user_searches_it(tiny_data, tmp_path):
    space = {"warmup_bias_lr": {"uniform": [0.0, 0.2]}, "lr0": {"uniform": [0.001, 0.01]}}
    assert _spec(tiny_data, tmp_path, space=space).mutation_gains == {}
