"""hpctune.report.importance: PED-ANOVA over subsets of the trials, or "too few trials to tell"."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from hpctune.report.importance import MIN_TRIALS, importance

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def trial(metric, **config):
    return SimpleNamespace(config=config, metric=metric)


def synthetic(n=40, seed=0):
    """lr0 drives the metric; momentum and weight_decay are noise."""
    rng = np.random.default_rng(seed)
    trials = []
    for _ in range(n):
        lr0, momentum, weight_decay = rng.uniform(0.001, 0.1), rng.uniform(0.8, 0.98), rng.uniform(0, 0.001)
        trials.append(trial(float(0.2 + 3 * lr0 + rng.normal(0, 0.03)), lr0=lr0, momentum=momentum,
                            weight_decay=weight_decay))
    return trials


KEYS = ["lr0", "momentum", "weight_decay"]


def test_four_trials_are_too_few():
    result = importance(synthetic(4), KEYS)
    assert not result.keys
    assert (result.usable, result.needed) == (4, MIN_TRIALS)
    assert result.note == f"too few trials to tell (4 of {MIN_TRIALS} needed)"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_key_that_drives_the_metric_ranks_first_and_clear_of_the_noise(seed):
    result = importance(synthetic(40, seed), KEYS)
    assert [k.key for k in result.keys][0] == "lr0"
    strong, *noise = result.keys
    assert strong.low > max(k.mean for k in noise)  # its spread does not reach the noise keys' means
    assert strong.above_chance and strong.direction == 1
    assert all(k.low <= k.mean <= k.high or math.isclose(k.low, k.high) for k in result.keys)
    assert result.usable == 40 and result.resamples == 20 and result.estimator.startswith("PED-ANOVA")


def test_a_key_that_lowers_the_metric_says_so():
    flipped = [trial(-t.metric, **t.config) for t in synthetic(40)]
    assert importance(flipped, KEYS).keys[0].direction == -1


def test_deterministic_for_a_seed():
    trials = synthetic(30)
    assert importance(trials, KEYS, seed=3) == importance(trials, KEYS, seed=3)
    assert importance(trials, KEYS, seed=3) != importance(trials, KEYS, seed=4)


def test_unusable_metrics_are_left_out():
    trials = synthetic(30)
    bad = [trial(value, lr0=0.05, momentum=0.9, weight_decay=0.0) for value in (None, math.nan, math.inf, -math.inf)]
    assert importance(trials + bad, KEYS) == importance(trials, KEYS)
    assert importance(synthetic(MIN_TRIALS - 1) + bad, KEYS).note == (
        f"too few trials to tell ({MIN_TRIALS - 1} of {MIN_TRIALS} needed)")


def test_categorical_keys():
    rng = np.random.default_rng(0)
    trials = []
    for i in range(40):
        optimizer = ["SGD", "Adam", "AdamW"][i % 3]
        trials.append(trial(float((optimizer == "SGD") + rng.normal(0, 0.1)), optimizer=optimizer,
                            cos_lr=bool(rng.integers(2)), imgsz=[320, 320] if i % 2 else [640, 640],
                            momentum=rng.uniform(0.8, 0.98)))
    result = importance(trials, ["optimizer", "cos_lr", "imgsz", "momentum"])
    found = {k.key: k for k in result.keys}
    assert set(found) == {"optimizer", "cos_lr", "imgsz", "momentum"}
    assert found["optimizer"].above_chance
    assert not any(found[k].above_chance for k in ("cos_lr", "imgsz", "momentum"))
    assert found["optimizer"].direction == found["cos_lr"].direction == 0  # no direction for categories


def test_keys_with_one_value_or_missing_are_skipped():
    trials = [trial(t.metric, **t.config, batch=16) for t in synthetic(20)]
    del trials[3].config["momentum"]
    result = importance(trials, [*KEYS, "batch"])
    assert {k.key for k in result.keys} == {"lr0", "weight_decay"}
    assert result.skipped == ("momentum", "batch")
    constant = [trial(0.5, **t.config) for t in trials]
    assert importance(constant, KEYS).note == "every trial has the same metric"
    assert importance(trials, ["batch"]).note == "no searched hyperparameter took more than one value"


def test_log_keys():
    result = importance(synthetic(30), KEYS, log_keys=["lr0"])
    assert result.keys[0].key == "lr0"


def test_chart_and_table():
    from hpctune.report.html import _importance_table
    from hpctune.report.plots import importance_chart

    few, enough = importance(synthetic(4), KEYS), importance(synthetic(30), KEYS)
    assert importance_chart(few).startswith(PNG_MAGIC) and importance_chart(enough).startswith(PNG_MAGIC)
    assert "too few trials to tell (4 of 10 needed)" in _importance_table(few)
    table = _importance_table(enough)
    assert table.count("<tr><td>") == 3 and "higher did better" in table and "PED-ANOVA" in table
