"""ASHA's ranking score (hpctune.engine.asha.score) with hpctune's ASHA scheduler, fed reports directly."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from ray.tune.schedulers import TrialScheduler

from hpctune.engine import asha

METRIC = "metrics/mAP50-95(B)"


def _report(metric: float, val_loss: float, epoch: int) -> dict[str, float]:
    metrics = {METRIC: metric, "val/box_loss": val_loss / 2, "val/cls_loss": val_loss / 2, "train/box_loss": 9.0}
    return {**metrics, "epoch": epoch, asha.SCORE: asha.score(metrics, METRIC)}


def _decisions(reports: list[tuple[float, float]], key: str) -> list[str]:
    """Trials reaching the first rung (epoch 1) one after another; ASHA's decision for each."""
    scheduler = asha.make_scheduler(epochs=9, grace_period=1, reduction_factor=3)
    scheduler._metric = key  # what the scheduler ranks by: the score, or (for contrast) the raw metric
    trials = [SimpleNamespace(trial_id=f"t{i}") for i in range(len(reports))]
    for trial in trials:
        scheduler.on_trial_add(None, trial)
    return [scheduler.on_trial_result(None, trial, _report(m, loss, 1))
            for trial, (m, loss) in zip(trials, reports, strict=True)]


def test_score_orders_by_the_metric_and_breaks_exact_ties_by_validation_loss():
    low_loss, high_loss = asha.score({METRIC: 0.0, "val/box_loss": 1.0}, METRIC), asha.score(
        {METRIC: 0.0, "val/box_loss": 8.0}, METRIC)
    assert low_loss > high_loss > 0.0
    # the smallest difference a reported metric can show (1e-6) outranks any loss
    assert asha.score({METRIC: 0.000001, "val/box_loss": 1e9}, METRIC) > asha.score(
        {METRIC: 0.0, "val/box_loss": 0.0}, METRIC)
    assert asha.score({METRIC: 0.5}, METRIC) == pytest.approx(0.5 + asha.TIE_WEIGHT)  # no loss reported
    assert asha.score({"val/box_loss": 1.0}, METRIC) is None
    assert math.isnan(asha.score({METRIC: float("nan")}, METRIC))


def test_the_loss_is_compared_without_the_searched_gains():
    """Ultralytics reports each loss term multiplied by its gain: a small `cls` must not win by itself."""
    metrics_small_gain = {METRIC: 0.0, "val/cls_loss": 0.2 * 3.0, "val/box_loss": 7.5 * 0.5}
    metrics_large_gain = {METRIC: 0.0, "val/cls_loss": 4.0 * 2.0, "val/box_loss": 7.5 * 0.4}
    small_gain, large_gain = {"cls": 0.2, "box": 7.5}, {"cls": 4.0, "box": 7.5}
    # raw losses: 4.35 against 11.0; divided by the gains: 3.5 against 2.4, the second learned more
    assert asha.score(metrics_large_gain, METRIC, large_gain) > asha.score(metrics_small_gain, METRIC, small_gain)
    assert asha.gain_free_loss({"val/dfl_loss": 3.0, "val/loss": 1.0, "train/box_loss": 9.0}, {"dfl": 1.5}) == 3.0
    assert asha.gain_free_loss({"val/cls_loss": 2.0}, {"cls": 0}) == 0.0  # a zero gain: the term is left out
    assert asha.gain_free_loss({"val/box_loss": float("inf")}, {}) == math.inf


def test_ties_at_zero_stop_nothing_on_the_raw_metric_but_do_on_the_score():
    # first epochs of a detector from scratch: every trial at 0 mAP, the later ones with a worse loss
    reports = [(0.0, 5.0), (0.0, 6.0), (0.0, 7.0), (0.0, 8.0), (0.0, 9.0), (0.0, 4.0)]
    raw = _decisions(reports, METRIC)
    ranked = _decisions(reports, asha.SCORE)
    assert raw == [TrialScheduler.CONTINUE] * 6  # cutoff 0, nobody below it: ASHA idle
    assert ranked.count(TrialScheduler.STOP) >= 3
    assert ranked[-1] == TrialScheduler.CONTINUE  # the lowest loss goes on
    assert all(d == TrialScheduler.STOP for d in ranked[1:5])  # each worse than those before it


def test_real_metric_differences_decide_as_before():
    reports = [(0.30, 9.0), (0.10, 1.0), (0.20, 2.0), (0.05, 0.5), (0.40, 9.9)]
    assert _decisions(reports, METRIC) == _decisions(reports, asha.SCORE)


def _drive(scheduler, reports):
    decisions = []
    for trial_id, epoch, value in reports:
        trial = SimpleNamespace(trial_id=trial_id)
        result = {"epoch": epoch, asha.SCORE: value}
        decisions.append(scheduler.on_trial_result(None, trial, result))
    return decisions


def test_same_decisions_as_rays_asha_on_random_streams():
    import random

    from ray.tune.schedulers import ASHAScheduler

    rng = random.Random(3)
    for _ in range(20):
        epochs, grace, rf = rng.choice([(9, 1, 3), (10, 3, 3), (27, 3, 3), (8, 2, 2)])
        reports = [(f"t{i}", e, round(rng.random(), 3)) for e in range(1, epochs + 1) for i in range(12)]
        ours = asha.make_scheduler(epochs=epochs, grace_period=grace, reduction_factor=rf)
        ray = ASHAScheduler(time_attr="epoch", metric=asha.SCORE, mode="max", max_t=epochs, grace_period=grace,
                            reduction_factor=rf)
        for i in range(12):
            ray.on_trial_add(None, SimpleNamespace(trial_id=f"t{i}"))
        stopped: set[str] = set()
        ours_d, ray_d = [], []
        for trial_id, epoch, value in reports:
            if trial_id in stopped:
                continue
            a = _drive(ours, [(trial_id, epoch, value)])[0]
            b = _drive(ray, [(trial_id, epoch, value)])[0]
            ours_d.append(a)
            ray_d.append(b)
            if a == TrialScheduler.STOP:
                stopped.add(trial_id)
        assert ours_d == ray_d
        assert sorted(ours.rungs) == sorted(m for m, _ in ray._brackets[0]._rungs)


def test_a_nan_score_never_survives_a_rung_nor_raises_the_cutoff():
    scheduler = asha.make_scheduler(epochs=9, grace_period=1, reduction_factor=3)
    decisions = _drive(scheduler, [("a", 1, 0.4), ("b", 1, float("nan")), ("c", 1, 0.3), ("d", 1, 0.5)])
    assert decisions[1] == TrialScheduler.STOP  # NaN: worst possible
    assert decisions[0] == TrialScheduler.CONTINUE and decisions[3] == TrialScheduler.CONTINUE


def test_state_is_plain_data_and_round_trips(tmp_path):
    scheduler = asha.make_scheduler(epochs=9, grace_period=1, reduction_factor=3)
    _drive(scheduler, [("a", 1, 0.4), ("b", 1, 0.1), ("a", 3, 0.5)])
    path = tmp_path / "asha.json"
    scheduler.save(str(path))
    again = asha.make_scheduler(epochs=9, grace_period=1, reduction_factor=3)
    again.restore(str(path))
    assert again.get_state() == scheduler.get_state()
    assert again.rungs[1] == {"a": 0.4, "b": 0.1} and again.rungs[3] == {"a": 0.5}
    assert _drive(again, [("c", 1, 0.05)]) == _drive(scheduler, [("c", 1, 0.05)])


def test_a_trial_ranks_by_the_best_score_it_reached_and_a_diverged_one_last():
    from hpctune.engine.trial import BestScore

    rank = BestScore(METRIC, {})
    values = [rank({METRIC: v}) for v in (0.0045, 0.0006, 0.0022, 0.005)]
    assert values == pytest.approx([0.0045 + asha.TIE_WEIGHT] * 3 + [0.005 + asha.TIE_WEIGHT])
    assert math.isnan(rank({METRIC: float("nan")}))  # diverged: worst now, whatever came before
    assert rank({"val/box_loss": 1.0}) is None  # no metric in this report
