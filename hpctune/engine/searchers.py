"""Search algorithms that suggest configurations from hpctune's plain space format.

A space maps each training argument to one distribution, `{"uniform": [lo, hi]}`, `{"loguniform": [lo, hi]}`,
`{"quniform": [lo, hi, step]}`, `{"randint": [lo, hi]}` (hi exclusive) or `{"choice": [...]}`, or to a fixed
value that every configuration carries unchanged. Three Ray Tune `Searcher`s read it directly:

- `RandomSearcher`: seeded numpy draws.
- `TPESearcher`: Optuna's multivariate TPE through its ask/tell interface, told which trials ASHA stopped.
- `EvolveSearcher`: Ultralytics' genetic tuner, made asynchronous and aware of how far each trial got.

All three maximise the metric, suggest the baseline (the configuration of not tuning) first, count a NaN or
infinite metric as the worst possible value, and keep their whole state as plain JSON data (`get_state`), which
`save`/`restore` (Ray's `save_to_dir`/`restore_from_dir`) write and read. A restored searcher continues exactly
as the saved one would have: it makes the same next suggestions, and trials that were running when it was saved
are recognised by their trial_id when Ray reports them again.

State, for every searcher (`get_state()`):

    {"format": 1, "settings": {"searcher", "space", "metric", "max_epochs", "seed", "baseline", ...},
     "trials": {trial_id: {"config": {...}, "results": [[epoch, value or null (NaN/inf)], ...],
                           "outcome": null (running) | "complete" | "pruned" | "error" | "no_result"}},
     "rng": numpy bit generator state (random, evolve), "numbers": {trial_id: Optuna trial number} (tpe)}
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from hpctune.errors import SpecError

logger = logging.getLogger(__name__)

NAMES = ("random", "tpe", "optuna", "evolve")  # "optuna" is Ultralytics' name for TPE
STOPPED_AS = ("pruned", "complete")
STATE_FORMAT = 1
TPE_STARTUP_TRIALS = 10  # Optuna's default, also Ultralytics' (its Ray search leaves it as is)
_MISSING = object()  # a result without the metric


def make_searcher(
    name: str,
    *,
    space: dict[str, Any],
    metric: str,
    max_epochs: int,
    seed: int,
    baseline: dict[str, Any] | None,
    stopped_as: str = "pruned",
    starts: list[dict[str, Any]] | None = None,
    max_trials: int = 10_000,
    gains: dict[str, float] | None = None,
) -> SpaceSearcher:
    """The searcher called `name` (one of NAMES) over `space`, maximising `metric`; the baseline first,
    then the configurations `starts` (other known-good points), then its own suggestions. `max_trials`
    sizes TPE's random start-up phase; `gains` scale evolve's mutation step per key (default 1)."""
    common = {"space": space, "metric": metric, "max_epochs": max_epochs, "seed": seed, "baseline": baseline,
              "starts": starts}
    if name == "random":
        return RandomSearcher(**common)
    if name in ("tpe", "optuna"):
        return TPESearcher(**common, stopped_as=stopped_as, n_startup_trials=tpe_startup_trials(max_trials))
    if name == "evolve":
        return EvolveSearcher(**common, gains=gains)
    raise SpecError(f"unknown searcher '{name}': use one of {', '.join(NAMES)}")


def tpe_startup_trials(max_trials: int) -> int:
    """Random draws before TPE models the results: Optuna's default 10, but at most a quarter of a small
    budget (at least 3), so that a search of 8 or 20 trials is not random search throughout."""
    return max(3, min(TPE_STARTUP_TRIALS, max_trials // 4))


class SpaceSearcher(Searcher):
    """What every searcher shares: the plain space, the baseline first, mode max, results per epoch, JSON state.

    Subclasses implement `_propose` (the searched values of the next configuration, or of `anchor` when given:
    the baseline, or an adopted configuration) and may react to `_on_result` and `_on_complete`.
    """

    name = ""

    def __init__(
        self, *, space: dict[str, Any], metric: str, max_epochs: int, seed: int, baseline: dict[str, Any] | None,
        starts: list[dict[str, Any]] | None = None,
    ):
        super().__init__(metric=metric, mode="max")
        if int(max_epochs) < 1:
            raise SpecError(f"max_epochs must be at least 1 (got {max_epochs})")
        self.space = dict(space)
        self.searched = {key: _kind_args(key, value) for key, value in space.items() if isinstance(value, dict)}
        self.max_epochs = int(max_epochs)
        self.seed = int(seed)
        self.anchor = _check_baseline(self.searched, baseline)  # the baseline's searched values, or None
        self.starts = [_check_baseline(self.searched, start) for start in starts or []]
        self.trials: dict[str, dict[str, Any]] = {}  # trial_id -> config, results {epoch: value}, outcome

    # --- Ray's Searcher interface

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        if mode and mode != "max":
            raise SpecError(f"hpctune searchers maximise the metric (mode 'max'), not mode '{mode}'")
        if metric and not self._metric:
            self._metric = metric  # the constructor's metric wins, as in Ray's searchers given a space
        return False  # the space is ours: Ray must not see unresolved domains in its own config

    def suggest(self, trial_id: str) -> dict[str, Any]:
        fixed = ([self.anchor] if self.anchor is not None else []) + self.starts
        index = sum(1 for trial in self.trials.values() if not trial.get("prior"))
        return self._add(trial_id, self._propose(trial_id, fixed[index] if index < len(fixed) else None))

    def adopt(self, trial_id: str, config: dict[str, Any]) -> dict[str, Any]:
        """Take `config`, suggested before (e.g. replayed from a journal), as the suggestion for trial_id."""
        return self._add(trial_id, self._propose(trial_id, {key: config[key] for key in self.searched}))

    def learn(self, priors: list[dict[str, Any]]) -> int:
        """Take the trials of an earlier search (`{"config", "results": {epoch: value}}`, see
        hpctune.run.warmstart) as known results before the first suggestion: a warm start. A trial whose
        values lie outside this space is left out; one that reached max_epochs counts as complete, any other
        as stopped at the epoch it reached. Returns how many were taken."""
        taken = 0
        for prior in priors:
            values = {key: prior["config"].get(key, _MISSING) for key in self.searched}
            if not prior["results"] or not all(_inside(*self.searched[k], v) for k, v in values.items()):
                continue
            trial_id = f"prior_{taken:05d}"
            results = {int(epoch): value for epoch, value in prior["results"].items()}
            config = {key: values[key] if key in self.searched else value for key, value in self.space.items()}
            self.trials[trial_id] = {"config": config, "results": results, "prior": True,
                                     "outcome": "complete" if max(results) >= self.max_epochs else "pruned"}
            self._on_learned(trial_id, self.trials[trial_id])
            taken += 1
        return taken

    def _add(self, trial_id: str, values: dict[str, Any]) -> dict[str, Any]:
        config = {key: values[key] if key in self.searched else value for key, value in self.space.items()}
        self.trials[trial_id] = {"config": config, "results": {}, "outcome": None}
        return dict(config)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        trial = self._live(trial_id)
        if trial is not None:
            self._record(trial_id, trial, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trial = self._live(trial_id)
        if trial is None:
            return
        if result:
            self._record(trial_id, trial, result)  # ASHA's stopping result reaches the searcher only here
        if error:
            trial["outcome"] = "error"
        elif not trial["results"]:
            trial["outcome"] = "no_result"
        else:
            trial["outcome"] = "complete" if max(trial["results"]) >= self.max_epochs else "pruned"
        self._on_complete(trial_id, trial)

    # --- state

    def settings(self) -> dict[str, Any]:
        """What a restored state must have been saved with."""
        return _plain({
            "searcher": self.name, "space": self.space, "metric": self._metric, "max_epochs": self.max_epochs,
            "seed": self.seed, "baseline": self.anchor, "starts": self.starts,
        })

    def get_state(self) -> dict[str, Any]:
        trials = {
            trial_id: {**trial, "results": [[epoch, value] for epoch, value in trial["results"].items()]}
            for trial_id, trial in self.trials.items()
        }
        return _plain({"format": STATE_FORMAT, "settings": self.settings(), "trials": trials})

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise SpecError(f"searcher state has format {state.get('format')!r}, expected {STATE_FORMAT}")
        saved, current = state["settings"], self.settings()
        differ = sorted(key for key in set(saved) | set(current) if saved.get(key) != current.get(key))
        if differ:
            raise SpecError(f"searcher state was saved with other settings ({', '.join(differ)}): "
                            "restore it with the settings of the search that saved it")
        self.trials = {
            trial_id: {**trial, "results": {int(epoch): value for epoch, value in trial["results"]}}
            for trial_id, trial in state["trials"].items()
        }

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(json.dumps(self.get_state()))

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(json.loads(Path(checkpoint_path).read_text()))

    # --- for subclasses

    def _propose(self, trial_id: str, anchor: dict[str, Any] | None) -> dict[str, Any]:
        raise NotImplementedError

    def _on_result(self, trial_id: str, epoch: int, value: float) -> None:
        pass

    def _on_complete(self, trial_id: str, trial: dict[str, Any]) -> None:
        pass

    def _on_learned(self, trial_id: str, trial: dict[str, Any]) -> None:
        """A trial of an earlier search, ended, taken as known (learn)."""

    def _live(self, trial_id: str) -> dict[str, Any] | None:
        """The record of a trial still running, or None (with a log line) for one unknown or finished."""
        trial = self.trials.get(trial_id)
        if trial is None or trial["outcome"] is not None:
            logger.debug("searcher: ignoring news of trial %s (%s)", trial_id, "finished" if trial else "unknown")
            return None
        return trial

    def _record(self, trial_id: str, trial: dict[str, Any], result: dict) -> None:
        """Keep the metric of a result at its epoch: the first report of an epoch counts (a trial that resumes
        from a checkpoint may report an epoch again); NaN/inf are kept as None; results without it are ignored."""
        epoch, value = _epoch(result), _value(result, self._metric)
        if epoch is None or value is _MISSING or epoch in trial["results"]:
            return
        trial["results"][epoch] = value
        self._on_result(trial_id, epoch, _worst_if_none(value))

    def _last(self, trial: dict[str, Any]) -> tuple[int, float]:
        """(furthest epoch reached, metric there): how far a trial got and how good it was there."""
        epoch = max(trial["results"])
        return epoch, _worst_if_none(trial["results"][epoch])


class RandomSearcher(SpaceSearcher):
    """Independent draws from a numpy generator seeded with `seed`: suggestion n depends only on (space, seed, n).

    Seeded numpy draws, after the baseline: suggestion n depends on (space, seed, n) alone.
    """

    name = "random"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.rng = np.random.default_rng(self.seed)

    def _propose(self, trial_id, anchor):
        return anchor if anchor is not None else {key: _draw(self.rng, *ka) for key, ka in self.searched.items()}

    def get_state(self):
        return {**super().get_state(), "rng": self.rng.bit_generator.state}

    def set_state(self, state):
        super().set_state(state)
        self.rng.bit_generator.state = state["rng"]


class TPESearcher(SpaceSearcher):
    """Optuna's TPE (multivariate, constant liar) through ask/tell, told how ASHA ended each trial.

    Every result is reported as an intermediate value at its epoch. A trial that reached `max_epochs` is told
    COMPLETE; one that ASHA stopped at a rung is told PRUNED (TPE then ranks it below every completed trial and,
    among pruned ones, by the epoch it reached, then by its value there) or, with stopped_as="complete", COMPLETE
    with its last value, as Ray's OptunaSearch does. An errored trial, or one without a result, is told FAIL.

    n_startup_trials is Optuna's default, 10, as in Ultralytics (which passes TPESampler(multivariate=True,
    constant_liar=True) to Ray), except for small budgets (see tpe_startup_trials): with Optuna's 10 a search of
    8 trials never leaves the random phase. Pruned trials count towards it, so ASHA's early stops end the random
    phase as quickly as completed trials would.

    The sampler is seeded again before each ask, from (seed, number of trials in the study): a suggestion is then
    a function of the seed and the study's trials alone, and a study rebuilt from the saved trials (same numbers,
    parameters, states, values, intermediate values, in the same order) suggests exactly what the original would.
    Not kept: trial timestamps, and a baseline outside the space, which Optuna's distributions cannot hold: it is
    suggested first all the same but is not told to the study.
    """

    name = "tpe"

    def __init__(self, *, stopped_as: str = "pruned", n_startup_trials: int = TPE_STARTUP_TRIALS, **kwargs):
        super().__init__(**kwargs)
        self.n_startup_trials = n_startup_trials
        if stopped_as not in STOPPED_AS:
            raise SpecError(f"stopped_as must be one of {', '.join(STOPPED_AS)} (got '{stopped_as}')")
        self.stopped_as = stopped_as
        self.distributions = {key: _optuna_distribution(key, *ka) for key, ka in self.searched.items()}
        self.study = _new_study()
        self.live: dict[str, Any] = {}  # trial_id -> optuna Trial, while running
        self.numbers: dict[str, int] = {}  # trial_id -> Optuna trial number

    def settings(self):
        return {**super().settings(), "stopped_as": self.stopped_as, "n_startup_trials": self.n_startup_trials}

    def _propose(self, trial_id, anchor):
        if anchor is not None:
            if not all(_in_distribution(self.distributions[key], value) for key, value in anchor.items()):
                logger.info("tpe: trial %s lies outside the space (a baseline?): it is not told to Optuna", trial_id)
                return anchor
            self.study.enqueue_trial(anchor)
        self.study.sampler = self._sampler()
        trial = self.study.ask(self.distributions)
        self.live[trial_id], self.numbers[trial_id] = trial, trial.number
        return anchor if anchor is not None else trial.params

    def _sampler(self):
        from optuna.exceptions import ExperimentalWarning
        from optuna.samplers import TPESampler

        seed = int(np.random.SeedSequence([self.seed, len(self.study.trials)]).generate_state(1)[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return TPESampler(seed=seed, multivariate=True, constant_liar=True, n_startup_trials=self.n_startup_trials)

    def _on_result(self, trial_id, epoch, value):
        if trial_id in self.live:
            self.live[trial_id].report(value, step=epoch)

    def _on_complete(self, trial_id, trial):
        if trial_id in self.live:
            self._tell(self.live.pop(trial_id), trial)

    def _on_learned(self, trial_id, trial):
        from optuna.samplers import RandomSampler

        sampler, self.study.sampler = self.study.sampler, RandomSampler(seed=0)  # every parameter is fixed
        self.study.enqueue_trial({key: trial["config"][key] for key in self.searched})
        optuna_trial = self.study.ask(self.distributions)
        self.study.sampler = sampler
        self.numbers[trial_id] = optuna_trial.number
        for epoch, value in sorted(trial["results"].items()):
            optuna_trial.report(_worst_if_none(value), step=epoch)
        self._tell(optuna_trial, trial)

    def _tell(self, optuna_trial, trial):
        from optuna.trial import TrialState

        outcome = trial["outcome"]
        if outcome in ("error", "no_result"):
            self.study.tell(optuna_trial, state=TrialState.FAIL)
        elif outcome == "pruned" and self.stopped_as == "pruned":
            self.study.tell(optuna_trial, state=TrialState.PRUNED)  # Optuna keeps the last intermediate value
        else:
            self.study.tell(optuna_trial, self._last(trial)[1])

    def get_state(self):
        return {**super().get_state(), "numbers": dict(self.numbers)}

    def set_state(self, state):
        """Rebuild the study by replaying the saved trials, in number order, through enqueue/ask/report/tell."""
        from optuna.samplers import RandomSampler

        super().set_state(state)
        self.study, self.live, self.numbers = _new_study(), {}, {}
        self.study.sampler = RandomSampler(seed=0)  # every parameter is fixed: no sampling happens
        for trial_id, number in sorted(state["numbers"].items(), key=lambda item: item[1]):
            trial = self.trials[trial_id]
            self.study.enqueue_trial({key: trial["config"][key] for key in self.searched})
            optuna_trial = self.study.ask(self.distributions)
            if optuna_trial.number != number:
                raise SpecError(f"searcher state: Optuna trial numbers are not consecutive (at {number})")
            self.numbers[trial_id] = number
            for epoch, value in trial["results"].items():
                optuna_trial.report(_worst_if_none(value), step=epoch)
            if trial["outcome"] is None:
                self.live[trial_id] = optuna_trial
            else:
                self._tell(optuna_trial, trial)


class EvolveSearcher(SpaceSearcher):
    """Ultralytics' genetic tuner (ultralytics/engine/tuner.py, 8.4), asynchronous.

    Whenever asked, it picks a parent among the best `parents` trials known so far and mutates it as
    Ultralytics does: each searched value is mapped to [0, 1] of its range (log scale for loguniform), mutated
    with probability `mutation` by a Gaussian step of `sigma` times the key's gain (Ultralytics' gains: momentum
    0.3; at least one grid step for randint/quniform; a gain of 0 keeps the parent's value), clipped to [0, 1]
    and mapped back (rounded to the grid); a choice changes with probability `mutation` to another category.
    A child equal to an earlier configuration is drawn again, and after 100 tries a random configuration is used.
    Steps of 0.2 of a log range move lr0 by a factor of several: smaller, relative steps (+-20 %, Ultralytics'
    step at the top of its linear range) found no better models in bench_search_quality and could not leave a
    baseline 10x from the good rate (the demo's) in a few trials.

    Parents are chosen as Ultralytics chooses them: by the best metric each trial reached (finished, stopped by
    ASHA or still running), with a probability proportional to that metric less the lowest parent's (plus
    1e-6). This strong pull to the best proven trial is what makes the genetic Tuner a hill-climb: a child is
    bred from a child that did well. A trial still early in its training has a low metric and is seldom a
    parent until it has shown more. Until a result is known the parents are the starting points (then the
    baseline, at weight ~0; random draws without either). Ultralytics' covariance step and stale-search decay
    of sigma are left out. The generator, seeded with `seed`, is saved with the trials.
    """

    name = "evolve"
    parents = 9  # Ultralytics' n
    sigma = 0.2
    mutation = 0.5  # Ultralytics' per-value mutation probability
    tries = 100

    def __init__(self, *, gains: dict[str, float] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rng = np.random.default_rng(self.seed)
        self.gains = {key: float(gain) for key, gain in (gains or {}).items() if key in self.searched}
        self.scales = [self._scale(key, kind, args) for key, (kind, args) in self.searched.items()]

    def _scale(self, key: str, kind: str, args: list) -> float:
        """A key's mutation step on [0, 1]: sigma times its gain, at least one grid step; 0 for a gain of 0."""
        gain = self.gains.get(key, 1.0)
        return max(self.sigma * gain, _grid_step(kind, args)) if gain else 0.0

    def settings(self):
        return {**super().settings(), **({"gains": self.gains} if self.gains else {})}

    def _propose(self, trial_id, anchor):
        if anchor is not None:
            return anchor
        parents, weights = self._parents()
        if not parents:
            return self._random()
        seen = {repr([trial["config"][key] for key in self.searched]) for trial in self.trials.values()}
        for _ in range(self.tries):
            child = self._mutate(parents[self.rng.choice(len(parents), p=weights / weights.sum())])
            if repr(list(child.values())) not in seen:
                return child
        return self._random()

    def _parents(self) -> tuple[list[dict[str, Any]], np.ndarray]:
        """The searched values of the best `parents` trials by the best metric each reached so far, and their
        weights: as Ultralytics weights its parents, the metric less the lowest one's plus 1e-6. Before any
        result (the baseline's aside, see _may_parent): the starting points, then the baseline (weight ~0 while
        a starting point is there)."""
        known = [trial for trial in self.trials.values()
                 if trial["results"] and trial["outcome"] != "error" and self._may_parent(trial)]
        if not known:
            points = [*self.starts, *([self.anchor] if self.anchor is not None else [])]
            return points, np.arange(len(points), 0, -1, dtype=float) - 1 + 1e-6
        scored = sorted(((self._best(trial), trial) for trial in known), key=lambda pair: pair[0], reverse=True)
        best = scored[: self.parents]  # sorted() is stable: earlier trials first on ties
        values = np.array([value for value, _ in best])
        finite = values[np.isfinite(values)]
        values = np.where(np.isfinite(values), values, finite.min() if finite.size else 0.0)
        return [self._values(trial) for _, trial in best], values - values.min() + 1e-6

    def _may_parent(self, trial: dict[str, Any]) -> bool:
        """The baseline (the untuned configuration, there to measure the gain; Ultralytics' tuners never search
        from it) is bred from only once every starting point has ended below it. It reports first when one
        trial runs at a time (one GPU), and was bred from before the start had shown anything."""
        if not self.starts or self.anchor is None or self._values(trial) != self.anchor:
            return True
        starts = [t for t in self.trials.values() if self._values(t) in self.starts]
        every_start_ended = all(any(self._values(t) == start and t["outcome"] is not None for t in starts)
                                for start in self.starts)
        return every_start_ended and all(self._best(trial) > self._best(t) for t in starts if t["results"])

    def _values(self, trial: dict[str, Any]) -> dict[str, Any]:
        return {key: trial["config"][key] for key in self.searched}

    @staticmethod
    def _best(trial: dict[str, Any]) -> float:
        """The best metric the trial reported (a missing, NaN or infinite one counts as the worst)."""
        return max(_worst_if_none(value) for value in trial["results"].values())

    def _mutate(self, parent: dict[str, Any]) -> dict[str, Any]:
        mutate = self.rng.random(len(self.searched)) < self.mutation
        steps = self.rng.standard_normal(len(self.searched)) * self.scales
        child = {}
        for i, (key, (kind, args)) in enumerate(self.searched.items()):
            if kind == "choice":
                child[key] = self._mutate_choice(args, parent[key], mutate[i])
            else:
                child[key] = _from_unit(kind, args, _to_unit(kind, args, parent[key]) + mutate[i] * steps[i])
        return child

    def _mutate_choice(self, choices: list, value: Any, mutate: bool) -> Any:
        if value in choices and not mutate:
            return value
        others = [choice for choice in choices if choice != value] or choices
        return others[int(self.rng.integers(len(others)))]

    def _random(self) -> dict[str, Any]:
        return {key: _draw(self.rng, kind, args) for key, (kind, args) in self.searched.items()}

    def get_state(self):
        return {**super().get_state(), "rng": self.rng.bit_generator.state}

    def set_state(self, state):
        super().set_state(state)
        self.rng.bit_generator.state = state["rng"]


# --- the plain space


def _kind_args(key: str, value: dict) -> tuple[str, list]:
    if len(value) != 1:
        raise SpecError(f"space: '{key}' must name exactly one distribution")
    ((kind, args),) = value.items()
    if kind not in ("uniform", "loguniform", "quniform", "randint", "choice"):
        raise SpecError(f"space: '{key}' uses unknown distribution '{kind}'")
    return kind, list(args)


def _check_baseline(searched: dict[str, tuple[str, list]], baseline: dict[str, Any] | None) -> dict[str, Any] | None:
    """The baseline's values of the searched keys (which it must all have: numbers for the numeric ones)."""
    if baseline is None:
        return None
    missing = [key for key in searched if key not in baseline]
    if missing:
        raise SpecError(f"baseline lacks searched keys {', '.join(missing)}: give the full configuration")
    wrong = [key for key, (kind, _) in searched.items() if kind != "choice" and not _is_number(baseline[key])]
    if wrong:
        raise SpecError(f"baseline values of {', '.join(wrong)} must be numbers")
    return {key: baseline[key] for key in searched}


def _draw(rng: np.random.Generator, kind: str, args: list) -> Any:
    """One random value; the same draws as hpctune's space sampling."""
    if kind == "uniform":
        return float(rng.uniform(args[0], args[1]))
    if kind == "loguniform":
        return float(math.exp(rng.uniform(math.log(args[0]), math.log(args[1]))))
    if kind == "quniform":
        low, high, step = args
        return float(min(max(round(rng.uniform(low, high) / step) * step, low), high))
    if kind == "randint":
        return int(rng.integers(args[0], args[1]))
    return args[int(rng.integers(len(args)))]  # choice


def _bounds(kind: str, args: list) -> tuple[float, float]:
    """The range of a numeric distribution on its mutation scale (log for loguniform; randint's high included)."""
    if kind == "loguniform":
        return math.log(args[0]), math.log(args[1])
    return float(args[0]), float(args[1] - 1 if kind == "randint" else args[1])


def _to_unit(kind: str, args: list, value: float) -> float:
    low, high = _bounds(kind, args)
    value = min(max(float(value), args[0]), args[1])
    value = math.log(value) if kind == "loguniform" else value
    return (value - low) / (high - low) if high > low else 0.0


def _from_unit(kind: str, args: list, unit: float) -> Any:
    low, high = _bounds(kind, args)
    value = low + min(max(unit, 0.0), 1.0) * (high - low)
    if kind == "loguniform":
        value = math.exp(value)
    elif kind == "randint":
        return int(min(max(round(value), args[0]), args[1] - 1))
    elif kind == "quniform":
        value = round(value / args[2]) * args[2]
    return float(min(max(value, args[0]), args[1]))


def _grid_step(kind: str, args: list) -> float:
    """The smallest step in [0, 1] that can change a randint/quniform value (0 for continuous ones)."""
    if kind not in ("randint", "quniform"):
        return 0.0
    low, high = _bounds(kind, args)
    return (1.0 if kind == "randint" else args[2]) / (high - low) if high > low else 0.0


# --- Optuna


def _new_study():
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not the "new study created" line on every restore
    try:
        return optuna.create_study(direction="maximize")
    finally:
        optuna.logging.set_verbosity(verbosity)


def _optuna_distribution(key: str, kind: str, args: list):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if kind == "uniform":
        return FloatDistribution(args[0], args[1])
    if kind == "loguniform":
        return FloatDistribution(args[0], args[1], log=True)
    if kind == "quniform":
        return FloatDistribution(args[0], args[1], step=args[2])
    if kind == "randint":
        return IntDistribution(args[0], args[1] - 1)
    try:
        return CategoricalDistribution(args)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"space: '{key}' choice values must be numbers, strings, booleans or null for tpe") from exc


def _inside(kind: str, args: list, value: Any) -> bool:
    """Whether `value` is one this space's `kind` over `args` can hold (a warm start's values may not be)."""
    if kind == "choice":
        return value in args
    if not _is_number(value) or not math.isfinite(value):
        return False
    high = args[1] - 1 if kind == "randint" else args[1]  # randint's upper bound is exclusive
    return args[0] <= value <= high


def _in_distribution(distribution, value: Any) -> bool:
    """Whether Optuna can record `value` under `distribution` (a baseline value may lie outside the space)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if isinstance(distribution, CategoricalDistribution):
        return value in distribution.choices
    if not distribution.low <= value <= distribution.high:
        return False
    step = distribution.step if isinstance(distribution, FloatDistribution) else 1
    if not step:
        return True
    grid = (value - distribution.low) / step
    return abs(grid - round(grid)) < 1e-8


# --- results


def _epoch(result: dict) -> int | None:
    for key in ("epoch", "training_iteration"):
        value = result.get(key)
        if _is_number(value) and math.isfinite(value):
            return int(value)
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _value(result: dict, metric: str) -> Any:
    """The metric of a result: a finite float, None for NaN/inf, _MISSING when the result lacks it."""
    value = result.get(metric)
    if value is None or isinstance(value, bool):
        return _MISSING
    try:
        value = float(value)
    except (TypeError, ValueError):
        return _MISSING
    return value if math.isfinite(value) else None


def _worst_if_none(value: float | None) -> float:
    return -math.inf if value is None else value


def _plain(data: Any) -> Any:
    """`data` as JSON gives it back (tuples become lists), so that saved and current settings compare equal."""
    return json.loads(json.dumps(data))
