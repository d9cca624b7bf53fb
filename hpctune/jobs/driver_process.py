"""The search driver of a SLURM job, run as a child of the job's rank-0 task (hpctune.jobs.entry).

When the Ray head's GCS dies, Ray's core worker ends the driver's process outright: no Python handler
runs. Out of process, the rank-0 task survives that, sees the head gone and requeues the job like a
preemption. This child only drives: the first USR2 or TERM (from Slurm or relayed by the parent) stops
the search gracefully; the parent keeps the stop's deadline, records the interruption and requeues.

    python -m hpctune.jobs.driver_process RUN_DIR ADDRESS REPORT_FD [JOB_END]

JOB_END (a Unix time): when the job will be stopped; no trial starts that could not finish an epoch
before then (engine.driver.run's job_end).

Its outcome goes to the inherited file descriptor REPORT_FD as one JSON object:
{"summary": {...}} after the search returned, {"stopped": true} when a stop came before the search
ran, {"error": "...", "exit_code": 2} for an error a user or cluster can cause.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from hpctune.engine import interrupt
from hpctune.errors import HpctuneError


def _report(fd: int, outcome: dict[str, Any]) -> None:
    with os.fdopen(fd, "w") as out:
        json.dump(outcome, out, default=str)


def main(argv: list[str] | None = None) -> int:
    run_dir, address, report_fd, *job_end = argv if argv is not None else sys.argv[1:]
    stop = interrupt.StopRequest()
    stop.install()
    from hpctune.engine import driver

    try:
        result = driver.run(run_dir, address=address, on_connect=stop.connected,
                            job_end=float(job_end[0]) if job_end else None)
    except interrupt.JobInterrupted:
        _report(int(report_fd), {"stopped": True})
        return 0
    except HpctuneError as exc:
        _report(int(report_fd), {"error": str(exc), "exit_code": exc.exit_code})
        return exc.exit_code
    _report(int(report_fd), {"summary": {"finished": bool(result.finished), "best_trial": result.best_trial,
                                         "best_metric": result.best_metric}})
    return 0


if __name__ == "__main__":
    from hpctune.jobs.entry import job_logging

    job_logging()
    sys.exit(main())
