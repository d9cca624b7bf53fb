"""Reports of a search, read from its run directory alone (finished, interrupted or still running).

`write_report(RUN_DIR)` writes RUN_DIR/report/: one PNG per plot and index.html, a single
self-contained page (plots embedded as base64) with the run's state, the metric per epoch of every
trial (ASHA's stops marked), survivors per rung, each hyperparameter against the trials' last
metric, a parameter-importance estimate, the top-k table and the best configuration.
`list_runs(STORAGE)` summarises every run directory under a storage folder.

A run is `running` while a driver holds its lock. Testing that takes the lock in shared mode for
an instant; a driver starting at that very instant would be told the run is busy and can simply
be started again.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from hpctune.errors import RunDirError
from hpctune.run.journal import baseline_trial
from hpctune.run.lock import holder
from hpctune.run.rundir import RunDir, atomic_write_bytes, atomic_write_text
from hpctune.run.spec import RunSpec

if TYPE_CHECKING:
    from hpctune.report.importance import Importance

RECORDS = "epochs.jsonl"  # hpctune.trial.RECORDS; trial.py is imported only where records are read (it imports Ray)

REPORT_DIR = "report"
PLOTS = {  # file: (title, caption)
    "metric_vs_epoch.png": (
        "Metric per epoch", "Every trial's metric after each epoch. The marker at the end of a line says how the "
        "trial ended: stopped by ASHA at a rung (red X), completed (green dot), still running (blue triangle). "
        "The thickest line is the best trial. The last epoch of a completed trial is Ultralytics' final "
        "evaluation of its best weights."),
    "survivors_per_rung.png": (
        "Survivors per rung", "How many trials reached each ASHA rung and the last epoch, against the 1/reduction "
        "factor that ASHA keeps at each rung (dashed)."),
    "hyperparameters.png": (
        "Hyperparameters against the metric", "Each searched hyperparameter against the trial's last reported "
        "metric. Trials stopped early report from fewer epochs, so they sit lower for that reason too."),
    "importance.png": (
        "Parameter importance (estimate)", "PED-ANOVA (Optuna): how differently each hyperparameter is spread among "
        "the best trials than among all trials, by their last metric. Bars are the mean over random subsets of the "
        "trials and error bars the 10th-90th percentile; the black tick is what the same estimate gives with the "
        "metric shuffled. A bar whose whole error bar clears its tick did more than chance. Trials stopped early "
        "report from fewer epochs, which the estimate mixes in. With too few trials there is no estimate."),
}


@dataclass
class TrialRecord:
    trial_id: str
    state: str
    config: dict[str, Any]
    history: list[tuple[int, float]] = field(default_factory=list)  # (epoch, metric)
    epochs: int = 0
    metric: float | None = None  # the last reported value
    best_metric: float | None = None
    node: str = ""


@dataclass
class RunView:
    rundir: RunDir
    spec: RunSpec
    manifest: dict[str, Any]
    state: str  # running, finished, interrupted, new
    trials: list[TrialRecord]
    pending: int
    milestones: list[int]
    updated: float | None

    @property
    def keys(self) -> list[str]:
        return [k for k, v in self.spec.space.items() if isinstance(v, dict)]

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for trial in self.trials:
            counts[trial.state] = counts.get(trial.state, 0) + 1
        if self.pending:
            counts["pending"] = counts.get("pending", 0) + self.pending
        return counts

    def ranked(self) -> list[TrialRecord]:
        scored = [t for t in self.trials if t.metric is not None]
        return sorted(scored, key=lambda t: (t.metric, t.epochs), reverse=True)


def driver_active(rundir: RunDir) -> bool:
    """Whether a driver holds the run's lock now (see the module docstring)."""
    return holder(rundir.path) is not None


def run_state(rundir: RunDir, manifest: dict[str, Any]) -> str:
    if driver_active(rundir):
        return "running"
    try:
        summary = json.loads(rundir.summary.read_text())
    except (OSError, ValueError):
        summary = {}
    if summary.get("finished"):
        return "finished"
    return "interrupted" if manifest.get("sessions") else "new"


def read_run(run_dir: str | Path) -> RunView:
    """Everything the report shows, read from the run directory; writes nothing."""
    rundir = RunDir(run_dir)
    manifest = rundir.read_manifest()
    from hpctune.run.records import EpochRecords, completed_epochs

    spec = RunSpec.from_dict(manifest["spec"])
    state = run_state(rundir, manifest)
    rows = _ray_rows(rundir, spec)
    if rows is None:
        rows = _folder_rows(rundir, spec)
    trials = []
    for row in rows:
        trial = TrialRecord(
            trial_id=row["trial_id"], state=row["state"], node=row.get("node", ""),
            config={k.split("/", 1)[1]: v for k, v in row.items() if k.startswith("config/")},
        )
        history = completed_epochs(EpochRecords(rundir.trial_dir(trial.trial_id) / RECORDS).read())
        trial.history = [(r["epoch"], float(r["metrics"][spec.metric])) for r in history
                         if isinstance(r.get("metrics", {}).get(spec.metric), (int, float))]
        trial.epochs = max((r["epoch"] for r in history), default=0)
        if trial.history:
            trial.metric = trial.history[-1][1]
            trial.best_metric = max(v for _, v in trial.history)
        if trial.state == "interrupted" and state == "running":
            trial.state = "running"
        if trial.state == "pending" and trial.history:
            trial.state = "running" if state == "running" else "interrupted"
        trials.append(trial)
    return RunView(
        rundir=rundir, spec=spec, manifest=manifest, state=state, trials=trials,
        pending=max(0, manifest["spec"]["max_samples"] - len(trials)),
        milestones=_milestones(rundir, spec), updated=_updated(rundir),
    )


def _ray_rows(rundir: RunDir, spec: RunSpec) -> list[dict[str, Any]] | None:
    """Trial states as Ray recorded them; None where there is no usable experiment state yet."""
    if not rundir.has_experiment_state():
        return None
    from hpctune.run.results import trial_rows

    quiet = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # unstarted trials have no result files: expected, not news
    try:
        return trial_rows(rundir, spec)
    except Exception:  # noqa: BLE001  (a state file being replaced or from another Ray: use the folders)
        return None
    finally:
        quiet.setLevel(level)


def _folder_rows(rundir: RunDir, spec: RunSpec) -> list[dict[str, Any]]:
    """Trials from their folders alone (before Ray's first snapshot); config from Ultralytics' args.yaml."""
    from hpctune.run.records import EpochRecords, completed_epochs

    rows = []
    keys = [k for k, v in spec.space.items() if isinstance(v, dict)]
    folders = sorted(p for p in rundir.trials.glob("*") if p.is_dir()) if rundir.trials.is_dir() else []
    for folder in folders:
        records = completed_epochs(EpochRecords(folder / RECORDS).read())
        try:
            args = yaml.safe_load((folder / "args.yaml").read_text()) or {}
        except (OSError, yaml.YAMLError):
            args = {}
        final = bool(records and records[-1].get("final"))
        rows.append({
            "trial_id": folder.name, "state": "completed" if final else "interrupted",
            "node": records[-1].get("node", "") if records else "",
            **{f"config/{k}": args[k] for k in keys if k in args},
        })
    return rows


def _milestones(rundir: RunDir, spec: RunSpec) -> list[int]:
    try:
        rungs = json.loads(rundir.asha_rungs.read_text())
        found = sorted({int(r["milestone"]) for r in rungs} - {spec.epochs})
        if found:
            return found
    except (OSError, ValueError, KeyError, TypeError):
        pass
    from hpctune.engine.progress import rung_milestones

    return rung_milestones(spec.epochs, spec.grace_period, spec.reduction_factor)


def _updated(rundir: RunDir) -> float | None:
    times = [p.stat().st_mtime for p in rundir.trials.glob(f"*/{RECORDS}")] if rundir.trials.is_dir() else []
    times.append(rundir.manifest.stat().st_mtime)
    return max(times) if times else None


# ---------------------------------------------------------------- the report

@dataclass
class Report:
    html: Path
    plots: list[Path]
    view: RunView


def write_report(run_dir: str | Path, top_k: int = 10, output: str | Path | None = None) -> Report:
    from hpctune.report import plots
    from hpctune.report.importance import importance

    view = read_run(run_dir)
    folder = Path(output).expanduser().resolve() if output else view.rundir.path / REPORT_DIR
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot write the report to {folder} ({exc.strerror}): pass a writable --output") from None
    spec = view.spec
    log_keys = [k for k in view.keys if "loguniform" in view.spec.space[k]]
    scores = importance(view.trials, view.keys, log_keys=log_keys)
    images = {
        "metric_vs_epoch.png": plots.metric_vs_epoch(view.trials, spec.metric, spec.epochs, view.milestones),
        "survivors_per_rung.png": plots.survivors(view.trials, spec.epochs, view.milestones, spec.reduction_factor),
        "hyperparameters.png": plots.hyperparameters(view.trials, view.keys, spec.space, spec.metric),
        "importance.png": plots.importance_chart(scores),
    }
    paths = []
    for name, data in images.items():
        atomic_write_bytes(folder / name, data)
        paths.append(folder / name)
    page = folder / "index.html"
    atomic_write_text(page, render_html(view, images, scores, top_k))
    return Report(html=page, plots=paths, view=view)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.5g}"
    return "" if value is None else str(value)


def _epochs(count: int) -> str:
    return f"{count} epoch" if count == 1 else f"{count} epochs"


def _when(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp)) if timestamp else "-"


def summary_text(view: RunView) -> str:
    counts = view.counts()
    return ", ".join(f"{n} {'stopped by ASHA' if s == 'stopped' else s}" for s, n in sorted(counts.items())) or "none"


def best_config(view: RunView) -> tuple[TrialRecord | None, str]:
    """The best trial and its configuration as a YOLO cfg (the saved file when the search wrote one)."""
    ranked = view.ranked()
    if not ranked:
        return None, ""
    best = ranked[0]
    if view.state == "finished" and view.rundir.best_yaml.is_file():
        return best, view.rundir.best_yaml.read_text()
    cfg = {k: v for k, v in view.spec.train_args.items() if k != "workers"}
    cfg.update(best.config)
    return best, yaml.safe_dump(cfg, sort_keys=True)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;
padding:0 1em}h1{margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.state{display:inline-block;padding:.1em .6em;border-radius:.8em;color:#fff;font-size:.9em}
.running{background:#1f77b4}.finished{background:#2ca02c}.interrupted{background:#d62728}.new{background:#7f7f7f}
table{border-collapse:collapse;font-size:.92em}td,th{border-bottom:1px solid #e5e5e5;padding:.3em .7em;text-align:right}
th{background:#f6f6f6}td:first-child,th:first-child,td.l,th.l{text-align:left}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.9em;
max-width:60em}pre{background:#f6f6f6;padding:1em;overflow:auto}.muted{color:#666}
"""

# Marks each image once it has loaded (or failed), and sums that up in #image-check: headless
# browsers and people can both see at a glance that every plot is there.
_SCRIPT = """
function hpctuneCheckImages(){
  var imgs=document.querySelectorAll('img'), ok=0;
  imgs.forEach(function(img){
    var loaded=img.complete&&img.naturalWidth>0;
    img.setAttribute('data-loaded',loaded?'yes':'no');
    img.setAttribute('data-natural-width',String(img.naturalWidth));
    if(loaded){ok++;}
  });
  var box=document.getElementById('image-check');
  box.setAttribute('data-loaded',String(ok));box.setAttribute('data-total',String(imgs.length));
  box.textContent=ok+' of '+imgs.length+' plots loaded';
}
window.addEventListener('load',hpctuneCheckImages);
"""


def render_html(view: RunView, images: dict[str, bytes], scores: Importance, top_k: int) -> str:
    spec, e = view.spec, html.escape
    best, cfg = best_config(view)
    counts = view.counts()
    total = view.manifest["spec"]["max_samples"] or len(view.trials)
    done = sum(counts.get(s, 0) for s in ("completed", "stopped", "error"))
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>hpctune report: {e(spec.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>hpctune report: {e(spec.name)}</h1>",
        f"<p><span class='state {e(view.state)}'>{e(view.state)}</span> &nbsp; {done} of {total} trials done "
        f"({e(summary_text(view))}) &nbsp;·&nbsp; created {e(str(view.manifest.get('created', '-')))} &nbsp;·&nbsp; "
        f"last result {_when(view.updated)} &nbsp;·&nbsp; sessions {len(view.manifest.get('sessions', []))}</p>",
        f"<p class='muted'>Run directory <code>{e(str(view.rundir.path))}</code>. Report written "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}" + (" while the search runs: run <code>hpctune report</code> again "
                                                  "for newer results." if view.state == "running" else ".") + "</p>",
    ]
    if best is not None:
        out.append(f"<p><b>Best so far:</b> trial <code>{e(best.trial_id)}</code>, {e(spec.metric)} = "
                   f"<b>{best.metric:.5f}</b> after {_epochs(best.epochs)} ({e(best.state)}).</p>")
    out.append("<p id='image-check' class='muted'>plots not checked yet (needs JavaScript)</p>")
    out.append(_settings_table(view))
    for name, (title, caption) in PLOTS.items():
        data = base64.b64encode(images[name]).decode()
        out.append(f"<h2>{e(title)}</h2><figure><img src='data:image/png;base64,{data}' alt='{e(title)}' "
                   f"data-file='{e(name)}'><figcaption>{e(caption)}</figcaption></figure>")
        if name == "importance.png":
            out.append(_importance_table(scores))
    out.append(_top_table(view, top_k))
    out.append(_outcome(view))
    out.append("<h2>Best configuration</h2>")
    if best is None:
        out.append("<p class='muted'>No trial has reported a metric yet.</p>")
    else:
        where = ("saved as <code>best_hyperparameters.yaml</code> in the run directory; train with "
                 "<code>yolo train cfg=best_hyperparameters.yaml model=... data=... epochs=...</code>"
                 if view.state == "finished" and view.rundir.best_yaml.is_file()
                 else "the best trial so far (the search writes best_hyperparameters.yaml when it ends)")
        out.append(f"<p>Trial <code>{e(best.trial_id)}</code>: {where}.</p><pre>{e(cfg)}</pre>")
    out.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(out) + "\n"


def _outcome(view: RunView) -> str:
    """What the search bought: the best trial against the baseline (the untuned first trial), and the
    final training's result where there is one."""
    e, lines = html.escape, []
    ranked = view.ranked()
    base_id = baseline_trial(view.rundir.suggestions)
    base = next((t for t in view.trials if t.trial_id == base_id and t.metric is not None), None)
    if ranked and base is not None:
        best = ranked[0].metric
        lines.append(f"best {best:.4f} vs baseline {base.metric:.4f} (trial {base_id}: your arguments, untuned), "
                     f"{best - base.metric:+.4f}")
    try:
        summary = json.loads(view.rundir.summary.read_text())
    except (OSError, ValueError):
        summary = {}  # the search has not ended yet
    for row in summary.get("final") or []:
        if row.get("metric") is not None:
            lines.append(f"final training (trial {row['trial_id']}), {row['epochs']} epochs: "
                         f"{row['metric']:.4f} ({row['state']})")
    if not lines:
        return ""
    return "<h2>Outcome</h2>" + "".join(f"<p>{e(line)}</p>" for line in lines)


def _settings_table(view: RunView) -> str:
    spec, e = view.spec, html.escape
    rows = [("model", spec.model), ("data", spec.data), ("task", spec.task), ("metric", spec.metric),
            ("epochs per trial (ASHA max_t)", spec.epochs), ("grace period", spec.grace_period),
            ("reduction factor", spec.reduction_factor), ("ASHA rungs at epochs", ", ".join(map(str, view.milestones))),
            ("trials", view.manifest["spec"]["max_samples"]), ("seed", spec.seed)]
    for key, dist in spec.space.items():
        if isinstance(dist, dict):
            kind, args = next(iter(dist.items()))
            rows.append((f"searched: {key}", f"{kind} {args}"))
    fixed = {k: v for k, v in spec.train_args.items()}
    if fixed:
        rows.append(("fixed training arguments", " ".join(f"{k}={v}" for k, v in sorted(fixed.items()))))
    cells = "".join(f"<tr><th class='l'>{e(str(k))}</th><td class='l'>{e(str(v))}</td></tr>" for k, v in rows)
    return f"<h2>Search</h2><table>{cells}</table>"


def _importance_table(scores: Importance) -> str:
    e = html.escape
    if not scores.keys:
        return f"<p class='muted'>No importance estimate: {e(scores.note)}.</p>"
    directions = {1: "higher did better", -1: "lower did better", 0: "unclear"}
    cells = "".join(
        f"<tr><td>{e(k.key)}</td><td>{k.mean:.3g}</td><td>{k.low:.3g} – {k.high:.3g}</td><td>{k.chance:.3g}</td>"
        f"<td class='l'>{'yes' if k.above_chance else 'no'}</td><td class='l'>{directions[k.direction]}</td></tr>"
        for k in scores.keys)
    skipped = (f"<p class='muted'>Not estimated (a single value, or missing from some trials): "
               f"{e(', '.join(scores.skipped))}.</p>" if scores.skipped else "")
    return (f"<table><tr><th>hyperparameter</th><th>importance (mean)</th><th>10th–90th percentile</th>"
            f"<th>chance</th><th class='l'>above chance</th><th class='l'>direction</th></tr>{cells}</table>"
            f"<p class='muted'>{e(scores.estimator)} on {scores.resamples} random subsets of 80% of the "
            f"{scores.usable} trials with a metric.</p>{skipped}")


def _top_table(view: RunView, top_k: int) -> str:
    e = html.escape
    ranked = view.ranked()[:top_k]
    keys = view.keys
    head = "".join(f"<th>{e(k)}</th>" for k in ["rank", "trial", "state", "epochs", "last metric", "best metric",
                                                  *keys])
    body = []
    for rank, t in enumerate(ranked, 1):
        cells = [str(rank), f"<code>{e(t.trial_id)}</code>", e(t.state), str(t.epochs), _fmt(t.metric),
                 _fmt(t.best_metric), *(e(_fmt(t.config.get(k))) for k in keys)]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    title = f"<h2>Top {len(ranked)} trials</h2>"
    if not body:
        return title + "<p class='muted'>No trial has reported a metric yet.</p>"
    return (f"{title}<p class='muted'>Ranked by {e(view.spec.metric)} at each trial's last epoch "
            f"(all trials: <code>results.csv</code>).</p><table><tr>{head}</tr>{''.join(body)}</table>")


# ---------------------------------------------------------------- hpctune list

def list_runs(storage: str | Path) -> list[dict[str, Any]]:
    """One row per run directory under `storage`, oldest first."""
    root = Path(storage).expanduser().resolve()
    if not root.is_dir():
        raise RunDirError(f"storage folder {root} does not exist: give the --storage folder the runs were started with")
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and (p / "manifest.json").is_file()):
        try:
            view = read_run(folder)
        except RunDirError as exc:
            rows.append({"name": folder.name, "state": "corrupt", "note": str(exc), "created": ""})
            continue
        counts = view.counts()
        ranked = view.ranked()
        rows.append({
            "name": folder.name, "state": view.state,
            "done": sum(counts.get(s, 0) for s in ("completed", "stopped", "error")),
            "running": counts.get("running", 0),
            "total": view.manifest["spec"]["max_samples"] or len(view.trials),
            "best": ranked[0].metric if ranked else None, "metric": view.spec.metric,
            "created": str(view.manifest.get("created", "")), "updated": _when(view.updated),
        })
    return sorted(rows, key=lambda r: (r.get("created", ""), r["name"]))
