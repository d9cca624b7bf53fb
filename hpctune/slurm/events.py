"""The run's SLURM history, RUN_DIR/slurm/events.jsonl: one line per submission, job start,
interruption and end, appended by the login node (submit, cancel) and by the job's rank 0.

    {"event": "submitted", "job": "42", "route": "submit", ...}
    {"event": "started", "job": "42", "restart": 0, "nodes": ["n1", "n2"], "head": "10.0.0.1:20000", ...}
    {"event": "interrupted", "job": "42", "restart": 0, "signal": "USR2", "reason": "preempted",
     "requeue": true, "in_flight": {"a1b2c3": 3}}
    {"event": "ended", "job": "42", "restart": 1, "finished": true}

`hpctune status` reads it; nothing depends on it to resume (the run directory does that).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

SLURM_DIR = "slurm"
EVENTS = "events.jsonl"


def events_file(run_dir: str | Path) -> Path:
    return Path(run_dir) / SLURM_DIR / EVENTS


def record(run_dir: str | Path, event: str, **fields: Any) -> dict[str, Any]:
    """Append one event (a single write of one line: concurrent writers do not interleave)."""
    entry = {"event": event, "time": round(time.time(), 3), "host": socket.gethostname(), **fields}
    path = events_file(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(entry, sort_keys=True, default=str) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return entry


def read(run_dir: str | Path) -> list[dict[str, Any]]:
    path = events_file(run_dir)
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue  # a line torn by a crash: skip it, keep the rest
    return entries


def job_ids(entries: list[dict[str, Any]]) -> list[str]:
    """Every job of the run, oldest first."""
    seen: list[str] = []
    for entry in entries:
        job = entry.get("job")
        if job and job not in seen:
            seen.append(str(job))
    return seen


def requeues(entries: list[dict[str, Any]], job: str, reason: str) -> int:
    """How often `job` was requeued for `reason` (its time limit; or head-lost: its Ray head died)."""
    return sum(
        1 for e in entries
        if e.get("event") == "interrupted" and e.get("job") == job and e.get("reason") == reason and e.get("requeue")
    )


def cancel_marker(run_dir: str | Path, job: str) -> Path:
    """Written by `hpctune cancel` before scancel: the job must not requeue itself on that TERM."""
    return Path(run_dir) / SLURM_DIR / f"cancel-{job}"
