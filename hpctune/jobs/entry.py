"""The in-job entry of a search, the same on every route: one task per node; `ray_cluster` makes
rank 0 the Ray head and the others Ray workers; rank 0 drives the engine from the run directory
(which restores the search when it has state).

    hpctune submit  -> jobs.submit -> submitit -> SearchJob() on every node -> run_job()
    hpctune sbatch  -> standalone script -> srun python -m hpctune.jobs.entry RUN_DIR -> run_job()
    hpctune tune (in salloc/sbatch) -> jobs.local.run_search -> srun python -m hpctune.jobs.entry RUN_DIR

Rank 0 runs the driver as a child process (jobs/driver_process.py) and watches the Ray head: when the
head dies (its GCS crashed or was killed), Ray ends the driver's process outright, and this task records
the loss and requeues the job like a preemption, at most max_requeues times per job.

On USR2 or TERM the search stops gracefully (engine/interrupt.py), Ray is torn down on every node,
and the job is requeued where that is due:
  USR2 (preemption, or --signal before the time limit) -> requeue; a time-limit requeue counts
      against max_requeues (submitit's countdown on the submitit route);
  TERM at the time limit -> the same as a timeout;
  TERM of a preemption (clusters that preempt without preempt_send_user_signal: Slurm's PreemptTime
      for this run is set) -> the same as USR2;
  any other TERM (scancel, `hpctune cancel`) -> no requeue; `hpctune resume RUN_DIR --submit`.
Events go to RUN_DIR/slurm/events.jsonl for `hpctune status`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import submitit

from hpctune.engine import interrupt
from hpctune.errors import ClusterError, HpctuneError, RunDirError
from hpctune.raycluster.node import die_with_parent
from hpctune.run.lock import holder
from hpctune.run.rundir import RunDir
from hpctune.run.spec import RunSpec
from hpctune.slurm import events, queries
from hpctune.slurm.allocation import Allocation
from hpctune.slurm.settings import ClusterSettings

log = logging.getLogger(__name__)

CLUSTER_DIR = "cluster"  # RUN_DIR/cluster: where the nodes of each job meet (ray_cluster)
# Slurm sends --signal up to 60 s early (sbatch(1); 0-30 s measured here): a stop this close to the
# time limit is a timeout, not a preemption.
TIMEOUT_MARGIN_S = 90
REQUEUE_ROOM_S = 20  # what the requeue itself needs before the time limit (scontrol, submitit's bookkeeping)
MIN_STOP_DEADLINE_S = 5.0
WATCH_S = 1.0  # how often rank 0 looks at the driver and the Ray head


class HeadLost(ClusterError):
    """The Ray head of this job died while the search ran: the job requeues like a preemption."""


def stop_deadline_s(signal_delay_s: float, signum: int = signal.SIGUSR2) -> float:
    """How long a graceful stop may run before the interruption is recorded and the requeue issued anyway:
    after USR2, the signal's lead on the time limit less room for the requeue itself; after TERM (a time
    limit, a preemption without a user signal, scancel) Slurm kills after KillWait or GraceTime, often
    seconds: the minimum."""
    if signum != signal.SIGUSR2:
        return MIN_STOP_DEADLINE_S
    return max(MIN_STOP_DEADLINE_S, signal_delay_s - REQUEUE_ROOM_S)


def once(action: Callable[[Any], None]) -> Callable[[Any], None]:
    """`action` runs at most once: the stop's watchdog and the normal path may both ask for it."""
    done = threading.Lock()

    def run(argument: Any) -> None:
        if done.acquire(blocking=False):
            action(argument)

    return run


def cluster_settings(rundir: RunDir) -> tuple[RunSpec, ClusterSettings]:
    spec = RunSpec.from_dict(rundir.read_manifest()["spec"])
    if not spec.cluster:
        raise ClusterError(
            f"run {rundir.path} has no SLURM settings (it was started locally): continue it with "
            f"`hpctune resume {rundir.path}`, or start a new one with `hpctune submit`"
        )
    return spec, ClusterSettings.from_dict(spec.cluster)


class SearchJob(submitit.helpers.Checkpointable):
    """submitit's callable: the run directory is the whole state, so `checkpoint()` (inherited)
    resubmits this same call, and the requeued job restores the search from the directory."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir

    def __call__(self) -> dict[str, Any] | None:
        submitit_handler = signal.getsignal(signal.SIGUSR2)  # submitit's: checkpoint, requeue, exit

        def requeue(reason: str) -> None:
            if callable(submitit_handler):
                submitit_handler(signal.SIGUSR2, None)  # counts timeouts itself; exits the process
            else:
                _scontrol_requeue(self.run_dir, reason)

        return run_job(self.run_dir, requeue)


def run_job(run_dir: str | Path, requeue: Callable[[str], None]) -> dict[str, Any] | None:
    """The in-job entry, on every node (one task each). Rank 0 returns a summary of the search."""
    from hpctune.raycluster.cluster import ray_cluster

    entered = time.time()
    job_logging()
    alloc = Allocation.from_env()
    if alloc is None:
        raise ClusterError("hpctune.jobs.entry runs inside a SLURM job: submit with `hpctune submit` or sbatch")
    rundir = RunDir(run_dir)
    rundir.read_manifest()
    busy = holder(rundir.path)
    if busy is not None:  # a second job of this run: leave before Ray starts, the first untouched (no event)
        raise RunDirError(f"run {rundir.path} is being driven by {busy}: this job leaves it alone; cancel that "
                          "one first to continue the run here")
    interrupt.ignore_in_children(signal.SIGUSR2)  # the Ray processes started below inherit it
    _, settings = _settings_or_default(rundir)
    # The interruption is recorded (and the job requeued where due) once: by the watchdog when the stop runs
    # past its deadline, or after the search returns.
    interrupted = once(lambda stopped: _record_interruption(rundir, alloc, settings, *stopped, requeue=requeue))
    stop = interrupt.StopRequest(deadline_s=lambda signum: stop_deadline_s(settings.signal_delay_s, signum),
                                 on_overrun=lambda signum: interrupted((signum, True)),
                                 tune_here=False)  # the driver is a child process: _drive hands it the stop
    if alloc.is_head:
        stop.install((signal.SIGTERM,))  # TERM during bring-up; USR2 once Ray's processes exist
        _remove_stale_tokens(rundir, alloc.job_id)
    result = None
    try:
        with ray_cluster(alloc, rundir.path / CLUSTER_DIR) as cluster:
            if not cluster.is_head:
                return None
            events.record(rundir.path, "started", job=alloc.job_id, restart=alloc.restart_count, entered=entered,
                          nodes=list(alloc.nodes), head=cluster.address, joined_s=cluster.joined_s,
                          cpus_per_node=alloc.cpus, gpus_per_node=alloc.gpus)
            stop.install()
            stop.check()  # a signal during the bring-up: leave before the search starts
            result = _drive(rundir, cluster, stop, _job_end(alloc, settings))
    except interrupt.JobInterrupted:
        pass
    except HeadLost as exc:
        stop.ended()
        if not _head_lost(rundir, alloc, settings, str(exc), requeue):
            raise
        return None
    except HpctuneError as exc:
        stop.ended()  # failed, not stopping: nothing for the watchdog to requeue
        if alloc.is_head:
            events.record(rundir.path, "failed", job=alloc.job_id, restart=alloc.restart_count, error=str(exc))
            raise
        # This node's Ray died while the head runs (node trouble, OOM): its trials are retried
        # from their checkpoints on the other nodes; this task ends without failing the job.
        log.warning("ray worker on %s stopped: %s", alloc.hostname, exc)
        return None
    except Exception as exc:
        stop.ended()
        if alloc.is_head:
            events.record(rundir.path, "failed", job=alloc.job_id, restart=alloc.restart_count,
                          error=f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        raise
    if not alloc.is_head:
        return None
    try:
        return _after_search(rundir, alloc, stop, result, interrupted)
    finally:
        stop.ended()


def _remove_stale_tokens(rundir: RunDir, job_id: str) -> None:
    """A job killed outright (scancel, node crash) could not delete its Ray token; the cluster it
    opened is gone, but a secret should not outlive it on shared storage. Only tokens of jobs Slurm
    no longer runs go: a second job of the same run must not break the live cluster of the first."""
    for token in (rundir.path / CLUSTER_DIR).glob("ray-*/token"):
        owner = token.parent.name.removeprefix("ray-").split(".", 1)[0]
        if owner == job_id or queries.squeue_state(owner) in {None, ""}:
            token.unlink(missing_ok=True)


def job_logging() -> None:
    """hpctune's messages (cluster bring-up, stops, requeues) into the task's stderr log."""
    logger = logging.getLogger("hpctune")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _job_end(alloc: Allocation, settings: ClusterSettings) -> float | None:
    """When this job gets its stop signal (its time limit less the signal's lead); None without a limit."""
    try:
        left = queries.time_left_s(alloc.job_id)
    except HpctuneError:  # no squeue on this node: no pause, the stop signal still comes
        return None
    return None if left is None else time.time() + left - settings.signal_delay_s


def _drive(rundir: RunDir, cluster, stop: interrupt.StopRequest, job_end: float | None) -> dict[str, Any]:
    """Run the driver as a child process until it ends; a stop is relayed to it (as USR2, which it
    handles once it can and ignores before: the relay repeats). Returns the search's summary; raises
    HeadLost when this node's Ray head ended first, JobInterrupted when a stop came before the search ran."""
    lost = HeadLost(f"the Ray head on this node ended while the search ran (see {cluster.run_dir})")
    report_fd, child_fd = os.pipe()
    try:
        child = subprocess.Popen([sys.executable, "-m", "hpctune.jobs.driver_process", str(rundir.path),
                                  cluster.address, str(child_fd), *([repr(job_end)] if job_end else [])],
                                 pass_fds=(child_fd,), preexec_fn=die_with_parent)
    finally:
        os.close(child_fd)
    try:
        while True:
            if stop.pending():
                child.send_signal(signal.SIGUSR2)
            elif not cluster.head_alive():
                child.kill()  # Ray would end it anyway, once its GCS reconnect timeout ran out
                child.wait()
                raise lost
            try:
                code = child.wait(WATCH_S)
                break
            except subprocess.TimeoutExpired:
                continue
        outcome = json.loads(_read_written(report_fd) or "{}")
    finally:
        os.close(report_fd)
    if "summary" in outcome:
        return outcome["summary"]
    if outcome.get("stopped") or stop.pending():
        raise interrupt.JobInterrupted(stop.signum or signal.SIGUSR2)
    if "error" in outcome:
        error = HpctuneError(outcome["error"])
        error.exit_code = int(outcome.get("exit_code", HpctuneError.exit_code))
        raise error
    if not cluster.head_alive():
        raise lost
    raise ClusterError(f"the search driver ended with exit code {code}: see this job's error output and "
                       f"{rundir.log_file}")


def _read_written(fd: int) -> str:
    """What the ended driver wrote to the pipe; without waiting for an EOF that a process it left behind
    (holding the pipe open) would hold back."""
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def _head_lost(rundir: RunDir, alloc: Allocation, settings: ClusterSettings, why: str,
               requeue: Callable[[str], None]) -> bool:
    """Record the loss of the Ray head and requeue, at most max_requeues times per job; whether it did."""
    done = events.requeues(events.read(rundir.path), alloc.job_id, "head-lost")
    due = done < settings.max_requeues
    log.warning("%s: %s", why, "requeueing the job" if due else
                f"not requeued ({done} times already): continue with `hpctune resume {rundir.path} --submit`")
    events.record(rundir.path, "interrupted", job=alloc.job_id, restart=alloc.restart_count, signal=None,
                  reason="head-lost", requeue=due, in_flight=in_flight(rundir))
    if due:
        requeue("head-lost")
    return due


def _after_search(rundir: RunDir, alloc: Allocation, stop: interrupt.StopRequest, result: dict[str, Any] | None,
                  interrupted: Callable[[tuple[int, bool]], None]) -> dict[str, Any]:
    summary = {"finished": False, "best_trial": None, "best_metric": None, **(result or {})}
    if stop.signum is None or summary["finished"]:  # a signal after the last trial ended stops nothing
        events.record(rundir.path, "ended", job=alloc.job_id, restart=alloc.restart_count, **summary,
                      **({"signal": stop.name} if stop.signum else {}))
        return summary
    interrupted((stop.signum, False))
    return summary


def _record_interruption(rundir: RunDir, alloc: Allocation, settings: ClusterSettings, signum: int,
                         overrun: bool, requeue: Callable[[str], None]) -> None:
    """Why the search stopped, and which epochs were in flight, into the run's events; requeue where due.
    `overrun`: the stop was still running at its deadline (recorded by the watchdog)."""
    reason = interruption_reason(rundir, alloc, settings, signum)
    due = reason in {"preempted", "timeout"}
    events.record(rundir.path, "interrupted", job=alloc.job_id, restart=alloc.restart_count,
                  signal=signal.Signals(signum).name, reason=reason, requeue=due, in_flight=in_flight(rundir),
                  **({"overrun": True} if overrun else {}))
    if due:
        requeue(reason)


def interruption_reason(rundir: RunDir, alloc: Allocation, settings: ClusterSettings, signum: int) -> str:
    """preempted, timeout, cancelled (hpctune cancel) or terminated (TERM from anyone else)."""
    if events.cancel_marker(rundir.path, alloc.job_id).exists():
        return "cancelled"
    left = queries.time_left_s(alloc.job_id)
    if left is not None and left <= settings.signal_delay_s + TIMEOUT_MARGIN_S:
        return "timeout"
    if signum == signal.SIGUSR2 or queries.preempted_in_this_run(alloc.job_id):  # TERM-only preemption too
        return "preempted"
    return "terminated"


def in_flight(rundir: RunDir) -> dict[str, int]:
    """The trials the stop interrupted and the epoch each was training (lost unless it ended)."""
    from hpctune.report.html import read_run

    try:
        view = read_run(rundir.path)
    except Exception as exc:  # noqa: BLE001  (a status detail: never let it block the requeue)
        log.warning("could not tell which trials were interrupted: %s", exc)
        return {}
    # Ray records a running trial as pending; one whose folder exists had started its first epoch.
    started = {t.trial_id for t in view.trials if rundir.trial_dir(t.trial_id).is_dir()}
    return {t.trial_id: t.epochs + 1 for t in view.trials
            if (t.state in {"interrupted", "running"} or (t.state == "pending" and t.trial_id in started))
            and t.epochs < view.spec.epochs}


def _settings_or_default(rundir: RunDir) -> tuple[RunSpec, ClusterSettings]:
    spec = RunSpec.from_dict(rundir.read_manifest()["spec"])
    return spec, ClusterSettings.from_dict(spec.cluster or {})


def _scontrol_requeue(run_dir: str | Path, reason: str) -> None:
    """Requeue without submitit (the standalone script, `hpctune tune` in an allocation)."""
    rundir = RunDir(run_dir)
    alloc = Allocation.from_env()
    _, settings = _settings_or_default(rundir)
    if alloc is None:
        return
    if reason == "timeout":
        done = events.requeues(events.read(rundir.path), alloc.job_id, "timeout") - 1  # minus this one
        if done >= settings.max_requeues:
            log.warning("job %s reached its time limit %d times: not requeued (resume with `hpctune resume %s "
                        "--submit`)", alloc.job_id, done + 1, rundir.path)
            return
    try:
        queries.requeue(alloc.job_id)
        log.info("job %s requeued (%s)", alloc.job_id, reason)
    except ClusterError as exc:
        log.warning("could not requeue job %s: %s", alloc.job_id, exc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpctune.jobs.entry", description="The in-job entry of a run.")
    parser.add_argument("run_dir", help="the run directory (on storage every node sees)")
    parser.add_argument("--no-requeue", action="store_true",
                        help="never requeue the job (hpctune tune inside an allocation: salloc cannot be requeued, "
                             "and a user's batch script may not be safe to run twice)")
    args = parser.parse_args(argv)

    def requeue(reason: str) -> None:
        if args.no_requeue:
            log.warning("search stopped (%s): continue it with `hpctune resume %s`", reason, args.run_dir)
        else:
            _scontrol_requeue(args.run_dir, reason)

    try:
        run_job(args.run_dir, requeue)
    except HpctuneError as exc:
        print(f"hpctune: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
