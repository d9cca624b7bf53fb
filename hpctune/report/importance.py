"""How much each searched hyperparameter mattered, with its uncertainty, or a plain "too few trials to tell".

The estimate is Optuna's PED-ANOVA (Watanabe et al., IJCAI 2023): for each hyperparameter, how far
the distribution of its values among the best trials departs from its distribution among all trials
(a Pearson divergence; 0: the best trials look like any others). It needs nothing beyond Optuna (its
fANOVA needs scikit-learn) and assumes no monotonic effect.

It is repeated on random subsets of 80% of the trials, drawn without replacement: the duplicated trials
of a classic bootstrap make PED-ANOVA's Parzen estimates spiky and inflate every importance. The subsets
overlap, so their spread understates the full sampling uncertainty. Hence the `chance` level of each
hyperparameter: the same estimate on the same subsets with the metric shuffled across trials. A
hyperparameter whose spread sits above its chance level did more than noise would. (Chance levels
differ between hyperparameters: Optuna smooths categorical values much more than numeric ones.)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ESTIMATOR = "PED-ANOVA (Optuna)"
# PED-ANOVA contrasts the best trials with all of them: Optuna's documentation asks for at least 5 trials
# in the best group, and that group must stay at most half of the trials for the contrast to mean
# anything. 10 trials (8 per subset, the best 4 of them) is the least that comes near both. In
# simulations (one key explaining about half of the metric's variance, two noise keys) the strong key
# ranked first in 40-57% of runs of 4-8 trials (33% by luck alone), two thirds at 10 and 90% at 20.
MIN_TRIALS = 10
RESAMPLES = 20
SUBSET = 0.8  # the fraction of the trials in each resample
SPREAD = (10, 90)  # the percentiles over the resamples reported as the spread


@dataclass(frozen=True)
class KeyImportance:
    key: str
    mean: float  # over the resamples
    low: float  # SPREAD[0] percentile over the resamples
    high: float  # SPREAD[1] percentile
    chance: float  # SPREAD[1] percentile of the same estimate with the metric shuffled
    direction: int  # +1: higher values did better, -1: lower did, 0: unclear, below chance or not numeric

    @property
    def above_chance(self) -> bool:
        return self.low > self.chance


@dataclass(frozen=True)
class Importance:
    usable: int  # trials with a finite metric
    needed: int  # the fewest usable trials that give an estimate
    keys: tuple[KeyImportance, ...] = ()  # most important first; empty when there is no estimate
    skipped: tuple[str, ...] = ()  # searched keys with a single value, or missing from some trials
    note: str = ""  # why there is no estimate
    estimator: str = ESTIMATOR
    resamples: int = RESAMPLES


def importance(trials: Sequence[Any], keys: Sequence[str], *, min_trials: int = MIN_TRIALS,
               log_keys: Collection[str] = (), resamples: int = RESAMPLES, seed: int = 0) -> Importance:
    """PED-ANOVA importance of `keys` for the trials' `.metric` (higher is better), from their `.config`.

    Trials whose metric is None, NaN or infinite are left out. `log_keys` are numeric keys searched on a
    log scale, estimated on a log grid.
    """
    scored = [t for t in trials if t.metric is not None and math.isfinite(t.metric)]
    base = {"usable": len(scored), "needed": min_trials, "resamples": resamples}
    if len(scored) < min_trials:
        return Importance(**base, note=f"too few trials to tell ({len(scored)} of {min_trials} needed)")
    inferred = {k: _distribution([t.config[k] for t in scored], k in log_keys)
                for k in keys if all(k in t.config for t in scored)}
    distributions = {k: d for k, d in inferred.items() if d is not None}
    skipped = tuple(k for k in keys if k not in distributions)
    if not distributions:
        why = "no searched hyperparameters" if not keys else "no searched hyperparameter took more than one value"
        return Importance(**base, skipped=skipped, note=why)
    metric = np.array([t.metric for t in scored], dtype=float)
    if metric.min() == metric.max():
        return Importance(**base, skipped=skipped, note="every trial has the same metric")

    rng = np.random.default_rng(seed)
    found: dict[str, list[float]] = {k: [] for k in distributions}
    shuffled: dict[str, list[float]] = {k: [] for k in distributions}
    rhos: dict[str, list[float]] = {k: [] for k in distributions if _numeric(distributions[k])}
    for _ in range(resamples):
        rows = rng.choice(len(scored), round(SUBSET * len(scored)), replace=False)
        subset = [scored[i] for i in rows]
        for key, value in _ped_anova(subset, metric[rows], distributions).items():
            found[key].append(value)
        for key, value in _ped_anova(subset, rng.permutation(metric[rows]), distributions).items():
            shuffled[key].append(value)
        for key in rhos:
            rhos[key].append(_spearman([float(t.config[key]) for t in subset], metric[rows]))
    ranked = sorted((_summary(k, found[k], shuffled[k], rhos.get(k)) for k in distributions), key=lambda r: -r.mean)
    return Importance(**base, keys=tuple(ranked), skipped=skipped)


def _distribution(values: list[Any], log: bool) -> Any:
    """The Optuna distribution the values were drawn from, as far as they tell; None for a single value."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        low, high = float(min(values)), float(max(values))
        return FloatDistribution(low, high, log=log and low > 0) if low < high else None
    choices = sorted({_choice(v) for v in values}, key=repr)
    return CategoricalDistribution(choices) if len(choices) > 1 else None


def _choice(value: Any) -> Any:
    """A value Optuna accepts as a categorical choice (lists and the like by their repr)."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)


def _numeric(distribution: Any) -> bool:
    from optuna.distributions import FloatDistribution

    return isinstance(distribution, FloatDistribution)


def _ped_anova(trials: list[Any], metric: np.ndarray, distributions: dict[str, Any]) -> dict[str, float]:
    """Unnormalised PED-ANOVA importances over an in-memory study of these trials."""
    import optuna
    from optuna.exceptions import ExperimentalWarning
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.trial import create_trial

    made = [create_trial(params={k: float(t.config[k]) if _numeric(d) else _choice(t.config[k])
                                 for k, d in distributions.items()},
                         distributions=distributions, value=float(value))
            for t, value in zip(trials, metric, strict=True)]
    # The best quarter of the trials, or the best 5 where that is more, but never more than half.
    quantile = min(0.5, max(0.25, 5 / len(trials)))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in memory" each time
    try:
        study = optuna.create_study(direction="maximize")
        study.add_trials(made)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # normalize=False
            found = optuna.importance.get_param_importances(
                study, evaluator=PedAnovaImportanceEvaluator(target_quantile=quantile), params=list(distributions),
                normalize=False)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return {k: float(found.get(k, 0.0)) for k in distributions}


def _spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    rx, ry = _ranks(np.asarray(xs, dtype=float)), _ranks(np.asarray(ys, dtype=float))
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their mean rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2)[inverse]


def _summary(key: str, values: list[float], shuffled: list[float], rhos: list[float] | None) -> KeyImportance:
    low, high = np.percentile(values, SPREAD)
    chance = float(np.percentile(shuffled, SPREAD[1]))
    direction = 0
    if rhos and low > chance:  # a direction only for what mattered, and where the resamples agree on it
        rho_low, rho_high = np.percentile(rhos, SPREAD)
        direction = 1 if rho_low > 0 else -1 if rho_high < 0 else 0
    return KeyImportance(key, float(np.mean(values)), float(low), float(high), chance, direction)
