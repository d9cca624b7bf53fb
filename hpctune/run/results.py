"""What a search produced, read back from the run directory alone: the trials table, the best
configuration as a YOLO cfg file, the best weights, and a summary."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpctune.run.journal import baseline_trial
from hpctune.run.records import PREVIOUS_WEIGHTS, RECORDS, RESUME_WEIGHTS, EpochRecords, completed_epochs
from hpctune.run.rundir import RunDir, atomic_copy, atomic_write_json, atomic_write_text
from hpctune.run.spec import RunSpec

# Ray's trial status -> what it means for a trial that did not finish its own training.
_UNFINISHED_STATE = {"TERMINATED": "stopped", "ERROR": "error", "RUNNING": "interrupted",
                     "PAUSED": "interrupted", "PENDING": "pending"}


@dataclass
class SearchResult:
    run_dir: Path
    best_trial: str | None
    best_config: dict[str, Any]
    best_metric: float | None
    best_weights: Path | None
    metric: str
    table: list[dict[str, Any]]
    finished: bool
    baseline_trial: str | None = None  # the trial that ran the untuned configuration
    baseline_metric: float | None = None
    search_finished: bool = False  # every search trial ended (the final training may still be due)
    final: list[dict[str, Any]] = field(default_factory=list)  # rows of the final training (--final-epochs)
    final_weights: Path | None = None

    def top_configs(self, count: int) -> list[dict[str, Any]]:
        """The configurations of the `count` best trials, ranked as the best trial is."""
        ranked = sorted((r for r in self.table if r["metric"] is not None),
                        key=lambda r: (r["metric"], r["epochs"]), reverse=True)
        return [_config(r) for r in ranked[:count]]

    def final_line(self) -> str | None:
        done = [r for r in self.final if r["state"] == "completed" and r["metric"] is not None]
        if not done:
            return None
        best = max(done, key=lambda r: r["metric"])
        return (f"final training ({best['epochs']} epochs): {self.metric} = {best['metric']:.4f}"
                + (f" vs {self.best_metric:.4f} in the search" if self.best_metric is not None else ""))

    def gain_line(self) -> str | None:
        """`best 0.41 vs baseline 0.12, +0.29`: what the search bought over not tuning."""
        if self.best_metric is None or self.baseline_metric is None:
            return None
        return (f"best {self.best_metric:.4f} vs baseline {self.baseline_metric:.4f}, "
                f"{self.best_metric - self.baseline_metric:+.4f}")

    def dataframe(self):
        import pandas as pd

        return pd.DataFrame(self.table)


def trial_rows(rundir: RunDir, spec: RunSpec, trials: list | None = None, final: bool = False) -> list[dict[str, Any]]:
    """One row per trial Ray knows: state, epochs trained, last and best metric, its configuration.
    `trials`: Ray's live Trial objects (a callback's), instead of loading the experiment state;
    `final`: the trials of the final training instead of the search's."""
    experiment, folder = (rundir.final_experiment, rundir.final_trials) if final else (rundir.experiment, rundir.trials)
    if trials is None:
        from ray.tune import ExperimentAnalysis

        trials = ExperimentAnalysis(str(experiment)).trials
    rows = []
    for trial in sorted(trials, key=lambda t: t.trial_id):
        history = _history(folder / trial.trial_id / RECORDS)
        values = [_finite(r["metrics"][spec.metric]) for r in history if spec.metric in r["metrics"]]
        finished = bool(history and history[-1].get("final"))
        rows.append({
            "trial_id": trial.trial_id,
            "state": "completed" if finished else _UNFINISHED_STATE.get(trial.status, trial.status.lower()),
            "epochs": max((r["epoch"] for r in history), default=0),
            "metric": values[-1] if values else None,
            "best_metric": max((v for v in values if v is not None), default=None),
            "node": history[-1].get("node", "") if history else "",
            **{f"config/{k}": v for k, v in trial.config.items()},
        })
    return rows


def _config(row: dict[str, Any]) -> dict[str, Any]:
    return {k.split("/", 1)[1]: v for k, v in row.items() if k.startswith("config/")}


def _finite(value: Any) -> float | None:
    """A metric value, or None where it is NaN or infinite: such a value ranks below every other."""
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


_HISTORIES: dict[Path, tuple[tuple[int, int, int], list[dict[str, Any]]]] = {}


def _history(path: Path) -> list[dict[str, Any]]:
    """completed_epochs of a trial's records, parsed again only when the file changed (a live table
    of thousands of trials reads each finished trial once)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return []
    key = (st.st_ino, st.st_size, st.st_mtime_ns)
    cached = _HISTORIES.get(path)
    if cached is None or cached[0] != key:
        cached = _HISTORIES[path] = (key, completed_epochs(EpochRecords(path).read()))
    return cached[1]


def load_result(run_dir: str | Path) -> SearchResult:
    """The outcome of a finished or running search, read from its run directory."""
    rundir = RunDir(run_dir)
    spec = RunSpec.from_dict(rundir.read_manifest()["spec"])
    if not rundir.has_experiment_state():
        return SearchResult(rundir.path, None, {}, None, None, spec.metric, [], False)
    return collect(rundir, spec)


def collect(rundir: RunDir, spec: RunSpec) -> SearchResult:
    """Read the search's outcome from the run directory; writes nothing."""
    rows = trial_rows(rundir, spec)
    ranked = sorted((r for r in rows if r["metric"] is not None), key=lambda r: (r["metric"], r["epochs"]))
    best = ranked[-1] if ranked else None
    search_finished = bool(rows) and all(r["state"] in {"completed", "stopped", "error"} for r in rows)
    final = trial_rows(rundir, spec, final=True) if rundir.has_experiment_state(rundir.final_experiment) else []
    final_done = bool(final) and all(r["state"] in {"completed", "error"} for r in final)
    result = SearchResult(
        run_dir=rundir.path, best_trial=None, best_config={}, best_metric=None, best_weights=None,
        metric=spec.metric, table=rows, finished=search_finished and (not spec.final_epochs or final_done),
        search_finished=search_finished, final=final,
    )
    done = [r for r in final if r["state"] == "completed" and r["metric"] is not None]
    if done:
        weights = rundir.final_trials / max(done, key=lambda r: r["metric"])["trial_id"] / "weights" / "best.pt"
        result.final_weights = weights if weights.exists() else None
    result.baseline_trial = baseline_trial(rundir.suggestions)
    base = next((r for r in rows if r["trial_id"] == result.baseline_trial), None)
    if base is not None:
        result.baseline_metric = base["metric"]
    if best is not None:
        result.best_trial = best["trial_id"]
        result.best_config = _config(best)
        result.best_metric = best["metric"]
        weights = rundir.trial_dir(best["trial_id"]) / "weights" / "best.pt"
        result.best_weights = weights if weights.exists() else None
    return result


def write_results(rundir: RunDir, spec: RunSpec) -> SearchResult:
    """Write results.csv, best_hyperparameters.yaml, best.pt and summary.json; return the result."""
    result = collect(rundir, spec)
    for row in result.table:
        if row["state"] in {"completed", "stopped"}:  # never runs again: its resume copies are dead weight
            for name in (RESUME_WEIGHTS, PREVIOUS_WEIGHTS):
                (rundir.trial_dir(row["trial_id"]) / name).unlink(missing_ok=True)
    _write_csv(rundir.results_csv, result.table)
    if result.best_trial is not None:
        best = next(r for r in result.table if r["trial_id"] == result.best_trial)
        _write_best_yaml(rundir.best_yaml, spec, best, result.best_config)
    if result.best_weights is not None:
        atomic_copy(result.best_weights, rundir.best_weights)
        result.best_weights = rundir.best_weights
    rows = result.table
    atomic_write_json(rundir.summary, {
        "finished": result.finished, "metric": spec.metric, "best_metric": result.best_metric,
        "best_trial": result.best_trial, "best_config": result.best_config,
        "baseline_trial": result.baseline_trial, "baseline_metric": result.baseline_metric,
        "final": [{k: r[k] for k in ("trial_id", "state", "epochs", "metric")} for r in result.final],
        "final_weights": str(result.final_weights) if result.final_weights else None,
        "trials": {state: sum(r["state"] == state for r in rows) for state in sorted({r["state"] for r in rows})},
    })
    return result


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _write_best_yaml(path: Path, spec: RunSpec, best: dict[str, Any], config: dict[str, Any]) -> None:
    """A cfg file for `yolo train cfg=...`: the fixed training arguments plus the best trial's values."""
    cfg = {k: v for k, v in spec.train_args.items() if k not in {"workers"}}
    cfg.update(config)
    header = (
        f"# Best hyperparameters of hpctune run {spec.name}: trial {best['trial_id']}, "
        f"{spec.metric} = {best['metric']:.5f} after {best['epochs']} epochs.\n"
        f"# Use: yolo train cfg={path.name} model=... data=... epochs=...\n"
    )
    atomic_write_text(path, header + yaml.safe_dump(cfg, sort_keys=True))
