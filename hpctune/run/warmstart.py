"""A warm start: what an earlier search's trials tell a new one (`--warm-start RUN_DIR`).

Read from that run's directory alone: the configuration suggested for each trial (suggestions.jsonl)
and the metric it reported at each epoch (trials/<id>/epochs.jsonl). The new search's searcher takes
them as known results before its first suggestion (hpctune.engine.searchers SpaceSearcher.learn);
the old run is only read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpctune.errors import RunDirError, SpecError
from hpctune.run.journal import read_journal
from hpctune.run.records import RECORDS, EpochRecords, completed_epochs
from hpctune.run.rundir import RunDir, check_format


def check_source(run_dir: str | Path, searched: list[str], metric: str) -> Path:
    """The run a new search may learn from: a run of this format, searching the same keys for the same
    metric, with at least one trial that reported. Returns its absolute path; else one clear error."""
    source = RunDir(Path(run_dir).expanduser().resolve())
    try:
        manifest = source.read_manifest()
        check_format(source, manifest)
    except RunDirError as exc:
        raise SpecError(f"--warm-start: {exc}") from None
    spec = manifest["spec"]
    theirs = sorted(k for k, v in spec.get("space", {}).items() if isinstance(v, dict))
    if theirs != sorted(searched):
        raise SpecError(f"--warm-start {run_dir} searched {', '.join(theirs) or 'nothing'}, this search "
                        f"{', '.join(sorted(searched)) or 'nothing'}: warm-start from a run with the same space keys")
    if spec.get("metric") != metric:
        raise SpecError(f"--warm-start {run_dir} ranked by {spec.get('metric')}, this search by {metric}: "
                        "use the same --metric")
    if not prior_trials(source.path, metric):
        raise SpecError(f"--warm-start {run_dir} has no trial with a result yet: nothing to learn from")
    return source.path


def prior_trials(run_dir: Path, metric: str) -> list[dict[str, Any]]:
    """Each trial of the run that reported `metric`: {"config", "results": {epoch: value or None}}, in the
    order the trials were suggested. The final evaluation counts at the last epoch."""
    source = RunDir(run_dir)
    priors = []
    for trial_id, entry in sorted(read_journal(source.suggestions).items(), key=lambda item: item[1].get("n", 0)):
        history = completed_epochs(EpochRecords(source.trial_dir(trial_id) / RECORDS).read())
        results = {r["epoch"]: _finite(r["metrics"].get(metric)) for r in history if metric in r["metrics"]}
        if results:
            priors.append({"config": entry["config"], "results": results})
    return priors


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value == value and abs(value) != float("inf") else None
