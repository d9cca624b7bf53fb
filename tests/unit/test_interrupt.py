"""The stop's deadline (hpctune.engine.interrupt.StopRequest) and the requeue guard (hpctune.jobs.entry)."""

import os
import signal
import threading
import time

from hpctune.engine.interrupt import StopRequest
from hpctune.jobs.entry import MIN_STOP_DEADLINE_S, once, stop_deadline_s


def _stop_with_deadline(deadline_s):
    """A StopRequest on USR2 with Ray Tune's stop handler (SIGUSR1) stood in for by a no-op."""
    fired = []
    stop = StopRequest(signals=(signal.SIGUSR2,), deadline_s=deadline_s, on_overrun=fired.append)
    previous = signal.getsignal(signal.SIGUSR2), signal.getsignal(signal.SIGUSR1)
    signal.signal(signal.SIGUSR1, lambda *_: None)
    stop.install()
    return stop, fired, previous


def _restore(previous):
    signal.signal(signal.SIGUSR2, previous[0])
    signal.signal(signal.SIGUSR1, previous[1])


def test_a_stop_that_hangs_past_its_deadline_acts_anyway():
    stop, fired, previous = _stop_with_deadline(0.2)
    try:
        os.kill(os.getpid(), signal.SIGUSR2)  # the search "hangs": ended() never comes
        deadline = time.monotonic() + 5
        while not fired and time.monotonic() < deadline:
            time.sleep(0.02)
        assert fired == [signal.SIGUSR2]
        os.kill(os.getpid(), signal.SIGUSR2)  # a later signal starts no second watchdog
        time.sleep(0.4)
        assert fired == [signal.SIGUSR2]
    finally:
        _restore(previous)


def test_a_stop_that_ends_in_time_leaves_the_watchdog_idle():
    stop, fired, previous = _stop_with_deadline(0.3)
    try:
        os.kill(os.getpid(), signal.SIGUSR2)
        stop.ended()
        time.sleep(0.5)
        assert fired == []
    finally:
        _restore(previous)


def test_the_deadline_leaves_room_for_the_requeue_before_the_time_limit():
    assert stop_deadline_s(90) == 70
    assert stop_deadline_s(10) == MIN_STOP_DEADLINE_S
    assert stop_deadline_s(90, signal.SIGTERM) == MIN_STOP_DEADLINE_S  # KillWait or GraceTime: seconds


def test_the_requeue_runs_once_whoever_asks_first():
    calls = []
    requeue = once(calls.append)
    threads = [threading.Thread(target=requeue, args=(f"r{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    requeue("late")
    assert len(calls) == 1


def test_a_term_is_a_preemption_only_when_slurm_chose_this_run(monkeypatch):
    from hpctune.slurm import queries

    def details(**fields):
        monkeypatch.setattr(queries, "job_details", lambda job: fields)

    details(PreemptTime="None", StartTime="2026-12-01T10:00:00")
    assert not queries.preempted_in_this_run("7")
    details(PreemptTime="2026-12-01T10:05:00", StartTime="2026-12-01T10:00:00")
    assert queries.preempted_in_this_run("7")
    details(PreemptTime="2026-12-01T09:59:00", StartTime="2026-12-01T10:00:00")  # an earlier run's
    assert not queries.preempted_in_this_run("7")
    details()  # Slurm knows no such job
    assert not queries.preempted_in_this_run("7")


def test_a_lost_ray_head_requeues_at_most_max_requeues_times(tmp_path):
    from hpctune.jobs.entry import _head_lost
    from hpctune.run.rundir import RunDir
    from hpctune.slurm import events
    from hpctune.slurm.allocation import Allocation
    from hpctune.slurm.settings import ClusterSettings

    alloc = Allocation(job_id="7", nodes=("n1", "n2"), node_rank=0, cpus=2)
    settings = ClusterSettings(max_requeues=2)
    requeued = []
    verdicts = [_head_lost(RunDir(tmp_path), alloc, settings, "head gone", requeued.append) for _ in range(3)]
    assert verdicts == [True, True, False] and requeued == ["head-lost"] * 2
    recorded = [(e["reason"], e["requeue"]) for e in events.read(tmp_path) if e["event"] == "interrupted"]
    assert recorded == [("head-lost", True), ("head-lost", True), ("head-lost", False)]
    other_job = Allocation(job_id="8", nodes=("n1",), node_rank=0, cpus=2)  # counted per job
    assert _head_lost(RunDir(tmp_path), other_job, settings, "head gone", requeued.append)
