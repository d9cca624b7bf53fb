"""ASHA's ranking score (hpctune.asha.score) with Ray's real ASHAScheduler, fed reports directly."""

from __future__ import annotations

from types import SimpleNamespace

from ray.tune.schedulers import TrialScheduler

from hpctune import asha

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
    assert asha.score({METRIC: 0.5}, METRIC) == 0.5  # no validation loss reported: the metric alone
    assert asha.score({"val/box_loss": 1.0}, METRIC) is None


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
