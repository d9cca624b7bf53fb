"""suggestions.jsonl: every suggested configuration, recorded in the run directory when suggested.

Ray restores a searcher from the last experiment snapshot. A trial suggested after that snapshot
is created again after a driver crash with the same trial id (the trial counter is in the
snapshot too), and finds its epochs on shared storage; but a stateful searcher, asked again from
its older state, might suggest something else for it. `hpctune.engine.journal.Journaled` wraps a searcher: a trial id
already in `suggestions.jsonl` gets its recorded configuration back (the searcher is told to adopt
it), so nothing is suggested twice and no trial changes its configuration between sessions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpctune.run.rundir import read_jsonl


def read_journal(path: Path) -> dict[str, dict[str, Any]]:
    """trial id -> its recorded suggestion ({"config", "n", "baseline"}); a torn line is ignored."""
    return {entry["trial_id"]: entry for entry in read_jsonl(path)}


def baseline_trial(path: Path) -> str | None:
    """The id of the trial that ran the baseline configuration, if there was one."""
    return next((tid for tid, e in read_journal(path).items() if e.get("baseline")), None)
