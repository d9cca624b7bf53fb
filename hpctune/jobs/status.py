"""`hpctune status RUN_DIR`: where a SLURM run stands, from a login node.

Reads the run directory (trials, events) and asks Slurm about the run's jobs (squeue while
queued or running, sacct afterwards, one record per requeue). Writes nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpctune.report.html import RunView, read_run
from hpctune.run.records import RECORDS, RESUME_WEIGHTS, EpochRecords
from hpctune.slurm import events, queries


@dataclass
class RunStatus:
    view: RunView
    events: list[dict[str, Any]]
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # job id -> state, attempts
    newest_checkpoint: tuple[str, float] | None = None  # (trial id, mtime)
    resumes: list[dict[str, Any]] = field(default_factory=list)


def collect(run_dir: str | Path) -> RunStatus:
    view = read_run(run_dir)
    entries = events.read(view.rundir.path)
    status = RunStatus(view=view, events=entries)
    ids = events.job_ids(entries)
    history = queries.sacct_history(ids) if ids else {}
    for job in ids:
        live = queries.squeue_state(job)
        attempts = history.get(job, [])
        status.jobs[job] = {"state": live or (attempts[-1]["State"] if attempts else "UNKNOWN"),
                            "live": live is not None, "attempts": attempts}
    # resume/last.pt while a trial runs; Ultralytics' weights/last.pt stays once it finished
    files = [*view.rundir.trials.glob(f"*/{RESUME_WEIGHTS}"), *view.rundir.trials.glob("*/weights/last.pt")]
    checkpoints = [(p.parent.parent.name, p.stat().st_mtime) for p in files]
    status.newest_checkpoint = max(checkpoints, key=lambda c: c[1]) if checkpoints else None
    status.resumes = resumes(view.rundir.path, entries)
    return status


def resumes(run_dir: Path, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every start after an interruption, with the seconds from the job's start (entry into
    hpctune) to the first epoch a resumed trial finished."""
    records = {folder.name: EpochRecords(folder / RECORDS).read()
               for folder in (run_dir / "trials").glob("*") if folder.is_dir()}
    starts = [e for e in entries if e.get("event") == "started"]
    found = []
    for index, start in enumerate(starts):
        if index == 0:
            continue
        since = start.get("entered", start["time"])
        until = starts[index + 1]["time"] if index + 1 < len(starts) else float("inf")
        # trials that had trained before this start and had not finished: the ones to continue
        waiting = [rs for rs in records.values()
                   if any(r["time"] < since for r in rs) and not any(r.get("final") and r["time"] < since for r in rs)]
        resumed = [r["time"] for rs in waiting for r in rs if since <= r["time"] < until]
        found.append({**start, "to_resume": len(waiting), "latency_s": (min(resumed) - since) if resumed else None})
    return found


def _when(timestamp: float) -> str:
    return time.strftime("%m-%d %H:%M:%S", time.localtime(timestamp))


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


def render(status: RunStatus, now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    view = status.view
    lines = [f"run {view.spec.name}: {view.state}  ({view.rundir.path})"]
    for job, info in status.jobs.items():
        attempts = info["attempts"]
        line = f"job {job}: {info['state']}" + (" (in the queue)" if info["live"] else "")
        if attempts:
            line += f"; {len(attempts)} run(s) of it: " + ", ".join(
                f"{a['State'].split()[0].lower()} {a['Elapsed']} on {a['NodeList']}" for a in attempts)
        lines.append(line)
    if not status.jobs:
        lines.append("no SLURM job recorded for this run (started locally, or with your own sbatch script not "
                     "yet running)")
    starts = [e for e in status.events if e.get("event") == "started"]
    if starts:
        last = starts[-1]
        live = status.jobs.get(str(last.get("job")), {}).get("state") in {"RUNNING", "COMPLETING"}
        lines.append(
            f"ray nodes ({'up' if live else 'last seen'}, job {last['job']} restart {last.get('restart', 0)}): "
            f"{', '.join(last.get('nodes', []))}; head {last.get('head')}; "
            f"{last.get('cpus_per_node')} CPUs, {last.get('gpus_per_node')} GPUs per node"
        )
    interruptions = [e for e in status.events if e.get("event") == "interrupted"]
    if interruptions:
        lines.append(f"interruptions: {len(interruptions)}")
        for e in interruptions:
            lost = ", ".join(f"{t} epoch {n}" for t, n in sorted(e.get("in_flight", {}).items())) or "nothing"
            then = "requeued" if e.get("requeue") else "not requeued"
            cause = " ".join(filter(None, (e.get("signal"), e.get("reason"))))  # a lost head has no signal
            late = " (the stop ran past its deadline)" if e.get("overrun") else ""
            lines.append(f"  {_when(e['time'])} job {e['job']} (restart {e.get('restart', 0)}): {cause}, "
                         f"{then}{late}; epochs in flight (lost): {lost}")
    if status.resumes:
        lines.append(f"resumes: {len(status.resumes)}")
        for r in status.resumes:
            if not r["to_resume"]:
                latency = "no trial was part-way (started trials start over from epoch 1)"
            elif r["latency_s"] is None:
                latency = f"{r['to_resume']} trial(s) to continue; none has finished an epoch since"
            else:
                latency = (f"{r['to_resume']} trial(s) continued; the first finished an epoch "
                           f"{r['latency_s']:.0f} s after the job started")
            lines.append(f"  {_when(r['time'])} job {r['job']} (restart {r.get('restart', 0)}) on "
                         f"{', '.join(r.get('nodes', []))}: {latency}")
    for e in status.events:
        if e.get("event") == "failed":
            lines.append(f"  {_when(e['time'])} job {e['job']} failed: {e.get('error')}")
    counts = view.counts()
    lines.append("trials: " + (", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none yet"))
    lines += _table(view)
    ranked = view.ranked()
    if ranked:
        best = ranked[0]
        lines.append(f"best so far: trial {best.trial_id}: {view.spec.metric} = {best.metric:.5f} "
                     f"after {best.epochs} epoch(s)")
    if status.newest_checkpoint:
        trial, mtime = status.newest_checkpoint
        lines.append(f"newest checkpoint: {_age(now - mtime)} ago (trial {trial})")
    return lines


def _table(view: RunView) -> list[str]:
    rows = [("TRIAL", "STATE", "EPOCH", "METRIC", "NODE")]
    for t in sorted(view.trials, key=lambda t: t.trial_id):
        metric = "-" if t.metric is None else f"{t.metric:.5f}"
        rows.append((t.trial_id, t.state, f"{t.epochs}/{view.spec.epochs}", metric, t.node or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
