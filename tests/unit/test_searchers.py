"""The searchers of hpctune.engine.searchers, driven directly (no Ray cluster) on a synthetic objective.

`Simulation` plays the part of Ray Tune with an ASHA scheduler: a few trials run at once, each reports one epoch
at a time (round robin), and a trial is stopped at rung 1 or 2 when it is below the median of the trials that
reached that rung before it. Like Ray, it sends the stopping result to on_trial_complete, not on_trial_result.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from optuna.trial import TrialState

from hpctune.engine.searchers import make_searcher
from hpctune.errors import SpecError

SPACE = {
    "lr0": {"loguniform": [1e-5, 1e-1]},
    "momentum": {"uniform": [0.6, 0.98]},
    "weight_decay": {"quniform": [0.0, 0.001, 0.0001]},
    "nbs": {"randint": [8, 65]},
    "optimizer": {"choice": ["SGD", "AdamW", "Adam"]},
    "imgsz": 320,
    "cache": False,
}
BASELINE = {"lr0": 0.01, "momentum": 0.937, "weight_decay": 0.0005, "nbs": 64, "optimizer": "SGD", "imgsz": 320,
            "cache": False, "epochs": 100}
MAX_EPOCHS = 4
RUNGS = (1, 2)
NAMES = ("random", "tpe", "optuna", "evolve")


def searcher(name, seed=0, baseline=BASELINE, **kwargs):
    return make_searcher(name, space=SPACE, metric="fitness", max_epochs=MAX_EPOCHS, seed=seed, baseline=baseline,
                         **kwargs)


def distance(config) -> float:
    """Distance to the optimum (lr0 1e-3, momentum 0.9), each axis scaled to its range."""
    return math.hypot((math.log10(config["lr0"]) + 3) / 4, (config["momentum"] - 0.9) / 0.38)


def fitness(config, epoch: int) -> float:
    """Better near the optimum, growing with epoch."""
    return epoch / MAX_EPOCHS * math.exp(-((distance(config) / 0.25) ** 2))


class Simulation:
    """Ray Tune with ASHA, in miniature (see the module docstring); deterministic given the suggestions."""

    def __init__(self, searcher, trials=30, concurrency=3, seed=0):
        self.searcher, self.trials, self.concurrency = searcher, trials, concurrency
        self.noise = np.random.default_rng(seed)
        self.running: list[list] = []  # [trial_id, config, epochs done]
        self.rungs: dict[int, list[float]] = {rung: [] for rung in RUNGS}
        self.suggested: list[dict] = []

    def step(self) -> bool:
        """One event: start a trial if a slot is free, else train the next running trial one epoch."""
        if len(self.running) < self.concurrency and len(self.suggested) < self.trials:
            trial_id = f"trial_{len(self.suggested):03d}"
            config = self.searcher.suggest(trial_id)
            self.suggested.append(config)
            self.running.append([trial_id, config, 0])
            return True
        if not self.running:
            return False
        trial = self.running.pop(0)
        trial[2] += 1
        trial_id, config, epoch = trial
        value = fitness(config, epoch) + 0.01 * self.noise.standard_normal()
        result = {"fitness": value, "epoch": epoch, "training_iteration": epoch}
        stop = epoch >= MAX_EPOCHS
        if epoch in self.rungs:
            stop = stop or bool(self.rungs[epoch]) and value < np.median(self.rungs[epoch])
            self.rungs[epoch].append(value)
        if stop:
            self.searcher.on_trial_complete(trial_id, result)
        else:
            self.searcher.on_trial_result(trial_id, result)
            self.running.append(trial)
        return True

    def run(self, events: int | None = None) -> list[dict]:
        count = 0
        while (events is None or count < events) and self.step():
            count += 1
        return self.suggested


def searched(config) -> dict:
    return {key: config[key] for key in SPACE if isinstance(SPACE[key], dict)}


def fixed_of(config) -> dict:
    return {key: config[key] for key in SPACE if not isinstance(SPACE[key], dict)}


@pytest.mark.parametrize("name", NAMES)
def test_baseline_is_the_first_suggestion(name):
    search = searcher(name)
    first, second = search.suggest("a"), search.suggest("b")
    assert first == {key: BASELINE[key] for key in SPACE}  # only the space's keys
    assert searched(second) != searched(first)


@pytest.mark.parametrize("name", ("random", "tpe", "evolve"))
def test_without_baseline_the_search_starts_at_once(name):
    suggested = Simulation(searcher(name, baseline=None), trials=5).run()
    assert all(searched(config) != searched(BASELINE) for config in suggested)


@pytest.mark.parametrize("name", ("tpe", "evolve"))
def test_a_baseline_outside_the_space_runs_first_and_the_search_goes_on(name):
    baseline = {**BASELINE, "momentum": 0.99, "optimizer": "RMSProp"}
    search = searcher(name, baseline=baseline)
    suggested = Simulation(search, trials=15).run()
    assert suggested[0] == {key: baseline[key] for key in SPACE}
    assert all(0.6 <= c["momentum"] <= 0.98 and c["optimizer"] in ("SGD", "AdamW", "Adam") for c in suggested[1:])
    if name == "tpe":  # Optuna cannot hold the baseline: it is left out of the study
        assert len(search.study.trials) == 14


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_suggestions(name):
    runs = [Simulation(searcher(name, seed=seed), trials=20).run() for seed in (1, 1, 2)]
    assert runs[0] == runs[1]
    assert runs[0][1:] != runs[2][1:]


@pytest.mark.parametrize("name", NAMES)
def test_suggestions_lie_in_the_space_with_the_right_types(name):
    suggested = Simulation(searcher(name, seed=3), trials=30).run()  # tpe leaves its random start after 10
    for config in suggested:
        assert list(config) == list(SPACE)
        assert fixed_of(config) == {"imgsz": 320, "cache": False}
        assert isinstance(config["lr0"], float) and 1e-5 <= config["lr0"] <= 1e-1
        assert isinstance(config["momentum"], float) and 0.6 <= config["momentum"] <= 0.98
        assert isinstance(config["nbs"], int) and not isinstance(config["nbs"], bool) and 8 <= config["nbs"] < 65
        assert config["optimizer"] in ("SGD", "AdamW", "Adam")
        decay = config["weight_decay"]
        assert 0.0 <= decay <= 0.001 and abs(decay / 0.0001 - round(decay / 0.0001)) < 1e-6
    assert len({c["optimizer"] for c in suggested}) > 1 and len({c["nbs"] for c in suggested}) > 3


@pytest.mark.parametrize("via", ("file", "ray_dir", "pickle"))
@pytest.mark.parametrize("name", NAMES)
def test_a_restored_searcher_continues_as_the_original(name, via, tmp_path):
    expected = Simulation(searcher(name), trials=25).run()

    simulation = Simulation(searcher(name), trials=25)
    while len(simulation.suggested) < 12 or not any(epochs > 0 for _, _, epochs in simulation.running):
        simulation.step()  # stop mid-search, with trials running that have reported results
    assert simulation.searcher.get_state()["trials"]["trial_000"]["outcome"] is not None
    if via == "file":
        simulation.searcher.save(str(tmp_path / "searcher.json"))
        restored = searcher(name)
        restored.restore(str(tmp_path / "searcher.json"))
    elif via == "ray_dir":  # what Tuner.fit / Tuner.restore call
        simulation.searcher.save_to_dir(str(tmp_path), session_str="2024-01-01_00-00-00")
        restored = searcher(name)
        restored.restore_from_dir(str(tmp_path))
    else:  # the Tuner pickles its search algorithm
        restored = pickle.loads(pickle.dumps(simulation.searcher))
    simulation.searcher = restored  # the old one is gone: in-flight trials report to the restored one
    assert simulation.run() == expected


@pytest.mark.parametrize("name", ("random", "tpe", "evolve"))
def test_an_adopted_configuration_is_followed_like_a_suggested_one(name):
    search = searcher(name)
    config = {**BASELINE, "lr0": 0.001, "optimizer": "Adam"}
    assert search.adopt("x", config) == {key: config[key] for key in SPACE}
    report(search, "x", [0.1, 0.2, 0.3, 0.4])
    assert search.get_state()["trials"]["x"]["outcome"] == "complete"
    assert searched(search.suggest("y")) != searched(BASELINE)  # adopted first: the baseline is not suggested
    if name == "tpe":
        assert search.study.trials[0].params["lr0"] == 0.001 and search.study.trials[0].value == 0.4


def test_restoring_a_state_saved_with_other_settings_is_refused(tmp_path):
    searcher("evolve", seed=0).save(str(tmp_path / "state.json"))
    with pytest.raises(SpecError, match="seed"):
        searcher("evolve", seed=1).restore(str(tmp_path / "state.json"))
    with pytest.raises(SpecError, match="searcher"):
        searcher("random", seed=0).restore(str(tmp_path / "state.json"))


def report(search, trial_id, values):
    """Report `values` for epochs 1.. as Ray does: all but the last as results, the last at completion."""
    for epoch, value in enumerate(values[:-1], start=1):
        search.on_trial_result(trial_id, {"fitness": value, "epoch": epoch})
    search.on_trial_complete(trial_id, {"fitness": values[-1], "epoch": len(values)})


@pytest.mark.parametrize("stopped_as", ("pruned", "complete"))
def test_tpe_tells_optuna_how_each_trial_ended(stopped_as):
    search = searcher("tpe", stopped_as=stopped_as)
    for trial_id in "abcdef":
        search.suggest(trial_id)
    report(search, "a", [0.1, 0.2, 0.3, 0.4])  # reached max_epochs
    search.on_trial_result("b", {"epoch": 1, "other": 1.0})  # no metric: ignored
    report(search, "b", [0.5, 0.6])  # stopped by ASHA at epoch 2
    search.on_trial_result("c", {"fitness": 0.1, "epoch": 1})
    search.on_trial_complete("c", error=True)
    report(search, "d", [0.1, 0.2, 0.3, float("nan")])
    search.on_trial_complete("e")  # stopped before any result
    trials = {trial_id: search.study.trials[search.numbers[trial_id]] for trial_id in "abcdef"}

    assert (trials["a"].state, trials["a"].value) == (TrialState.COMPLETE, 0.4)
    assert trials["a"].intermediate_values == {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4}
    assert trials["b"].intermediate_values == {1: 0.5, 2: 0.6}
    expected_b = TrialState.PRUNED if stopped_as == "pruned" else TrialState.COMPLETE
    assert (trials["b"].state, trials["b"].value) == (expected_b, 0.6)
    assert trials["c"].state == TrialState.FAIL
    assert (trials["d"].state, trials["d"].value) == (TrialState.COMPLETE, -math.inf)  # NaN is the worst
    assert trials["e"].state == TrialState.FAIL
    assert trials["f"].state == TrialState.RUNNING
    search.on_trial_complete("a", {"fitness": 9.0, "epoch": 4})  # a repeated completion changes nothing
    assert search.study.trials[search.numbers["a"]].value == 0.4


def test_tpe_learns_from_pruned_trials_by_epoch_reached():
    """Trials stopped at epoch 1 with high values must not outrank one stopped at epoch 2 with a low value."""
    search = searcher("tpe", baseline=None)
    for index in range(12):
        search.suggest(f"t{index}")
        report(search, f"t{index}", [0.9] if index else [0.1, 0.2])
    from optuna.samplers._tpe.sampler import _split_trials

    below, _ = _split_trials(search.study, search.study.trials, 1)
    assert [trial.number for trial in below] == [0]


def _parent_ids(search) -> tuple[list[str], list[float]]:
    parents, weights = search._parents()
    ids = [next(t for t, trial in search.trials.items() if searched(trial["config"]) == config) for config in parents]
    return ids, list(weights / weights.sum())


def test_evolve_breeds_from_the_best_metric_each_trial_reached_weighted_as_ultralytics_does():
    search = searcher("evolve", baseline=None)
    for trial_id in "abcde":
        search.suggest(trial_id)
    report(search, "a", [0.9])  # stopped early with the best value
    report(search, "b", [0.1, 0.2])
    report(search, "c", [0.5, float("inf")])  # inf is the worst: its best is 0.5
    search.on_trial_result("d", {"fitness": 0.3, "epoch": 1})
    search.on_trial_result("d", {"fitness": 0.4, "epoch": 2})  # still running
    search.on_trial_result("e", {"fitness": 5.0, "epoch": 3})
    search.on_trial_complete("e", error=True)  # errored trials are no parents
    ids, weights = _parent_ids(search)
    assert ids == ["a", "c", "d", "b"]
    # Ultralytics: fitness less the lowest parent's, plus 1e-6: the best is bred from most, the last ~never.
    assert weights == pytest.approx([0.7 / 1.2, 0.3 / 1.2, 0.2 / 1.2, 0.0], abs=1e-5)


def test_evolve_breeds_from_a_finished_good_trial_not_from_one_that_is_only_further():
    """The baseline finished (0.005); the start is at epoch 9 with 0.1; a child stopped at epoch 3 (0.0003):
    nearly every child comes from the start."""
    search = searcher("evolve", starts=[{**BASELINE, "lr0": 0.001}])
    for trial_id in ("base", "start", "child"):
        search.suggest(trial_id)
    report(search, "base", [0.0, 0.0, 0.0, 0.001, 0.002, 0.003, 0.003, 0.004, 0.004, 0.005])
    for epoch, value in enumerate([0.0, 0.0, 0.0003, 0.01, 0.03, 0.05, 0.07, 0.09, 0.1], 1):
        search.on_trial_result("start", {"fitness": value, "epoch": epoch})
    report(search, "child", [0.0, 0.0001, 0.0003])
    ids, weights = _parent_ids(search)
    assert ids == ["start", "child"] and weights[0] > 0.95  # the baseline waits for the start to end


def test_evolve_concentrates_near_the_optimum_better_than_random():
    def last_distances(name):
        suggested = Simulation(searcher(name, seed=7), trials=40).run()
        return np.median([distance(config) for config in suggested[-10:]])

    assert last_distances("evolve") < 0.5 * last_distances("random")


def test_evolve_moves_momentum_by_its_gain_and_lr0_on_its_log_range():
    """Momentum, given Ultralytics' gain 0.3, moves by 0.3 x 0.2 of its range; lr0 (loguniform, no gain) by
    0.2 of its log range (1e-5..1e-1: ln 1e4)."""
    search = searcher("evolve", gains={"momentum": 0.3, "not_searched": 5.0})
    assert search.gains == {"momentum": 0.3} and search.settings()["gains"] == {"momentum": 0.3}
    parent = {"lr0": 1e-3, "momentum": 0.8, "weight_decay": 0.0005, "nbs": 32, "optimizer": "SGD"}
    children = [search._mutate(parent) for _ in range(3000)]
    lr0_steps = [s for s in (math.log(c["lr0"] / parent["lr0"]) for c in children) if abs(s) > 1e-9]
    momentum_steps = [s for s in (c["momentum"] - parent["momentum"] for c in children) if abs(s) > 1e-9]
    assert np.std(lr0_steps) == pytest.approx(0.2 * math.log(1e4), rel=0.1)
    assert np.std(momentum_steps) == pytest.approx(0.3 * 0.2 * 0.38, rel=0.1)
    assert searcher("evolve").settings().get("gains") is None  # no gains: the settings of earlier runs


def test_evolve_keeps_the_parents_value_of_a_key_with_gain_0():
    search = searcher("evolve", gains={"momentum": 0.0, "nbs": 0.0})  # uniform and randint
    parent = {"lr0": 1e-3, "momentum": 0.8, "weight_decay": 0.0005, "nbs": 32, "optimizer": "SGD"}
    children = [search._mutate(parent) for _ in range(200)]
    assert {child["momentum"] for child in children} == {0.8} and {child["nbs"] for child in children} == {32}
    assert len({child["lr0"] for child in children}) > 50  # the other keys still move


def test_bad_arguments_are_refused():
    with pytest.raises(SpecError, match="unknown searcher"):
        searcher("grid")
    with pytest.raises(SpecError, match="stopped_as"):
        searcher("tpe", stopped_as="ignored")
    with pytest.raises(SpecError, match="lacks"):
        searcher("evolve", baseline={"lr0": 0.01})
    with pytest.raises(SpecError, match="mode"):
        searcher("random").set_search_properties("fitness", "min", {})


@pytest.mark.parametrize("name", NAMES)
def test_the_baseline_then_the_starting_points_then_the_search(name):
    start = {**BASELINE, "lr0": 0.001, "optimizer": "AdamW"}
    search = searcher(name, starts=[start])
    first, second, third = (search.suggest(f"t{i}") for i in range(3))
    assert searched(first) == searched(BASELINE) and searched(second) == searched(start)
    assert searched(third) not in (searched(BASELINE), searched(start))


def test_tpe_startup_phase_fits_the_budget():
    from hpctune.engine.searchers import tpe_startup_trials

    assert [tpe_startup_trials(n) for n in (1, 8, 20, 40, 100, 100_000)] == [3, 3, 5, 10, 10, 10]
    assert searcher("tpe", max_trials=8).n_startup_trials == 3


def test_tpe_with_a_small_budget_models_the_results_sooner():
    """8 trials: Optuna's default start-up (10) is random throughout; the budget's start-up is not."""
    def mean_distance(max_trials):
        finals = []
        for seed in range(6):
            suggested = Simulation(searcher("tpe", seed=seed, max_trials=max_trials), trials=12, seed=seed).run()
            finals.append(np.mean([distance(config) for config in suggested[6:]]))
        return np.mean(finals)

    assert mean_distance(12) < mean_distance(10_000)


def test_evolve_breeds_from_the_starting_points_before_any_result():
    start = {**BASELINE, "lr0": 0.001, "momentum": 0.9}
    search = searcher("evolve", starts=[start])
    search.suggest("base"), search.suggest("start")
    parents, weights = search._parents()
    assert parents == [searched(start), searched(BASELINE)] and weights[1] < 1e-5 * weights[0]  # the start
    report(search, "base", [0.1])
    assert search._parents()[0] == [searched(start), searched(BASELINE)]  # the baseline's result alone: the start
    search.on_trial_result("start", {"fitness": 0.3, "epoch": 1})
    assert search._parents()[0] == [searched(start)]  # then the trials with results


def test_evolve_breeds_from_the_baseline_only_once_every_start_ended_below_it():
    """One trial at a time: the baseline ends before the start reports; its children are not the baseline's."""
    start = {**BASELINE, "lr0": 0.001, "momentum": 0.9}
    search = searcher("evolve", starts=[start])
    search.suggest("base"), search.suggest("start")
    report(search, "base", [0.1, 0.2])
    parents, weights = search._parents()  # a child asked for now (Ray asks ahead) is the start's
    assert parents == [searched(start), searched(BASELINE)] and weights[1] < 1e-5 * weights[0]
    search.on_trial_result("start", {"fitness": 0.05, "epoch": 1})
    assert _parent_ids(search)[0] == ["start"]  # running: the baseline waits for it to end
    report(search, "start", [0.05, 0.1])
    assert _parent_ids(search)[0] == ["base", "start"]  # ended below the baseline: the baseline is a parent
