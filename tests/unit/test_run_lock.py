"""The run's lock (hpctune.run.lock): flock, and the lease where a file system refuses flock."""

import errno
import fcntl
import multiprocessing
import os
import time

import pytest

from hpctune.errors import RunDirError
from hpctune.run import lock


def _hold_in_child(run, ready, release):
    with lock.hold(run):
        ready.set()
        release.wait(30)


def test_a_second_holder_gets_one_line_naming_the_first(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold_in_child, args=(tmp_path, ready, release))
    child.start()
    try:
        assert ready.wait(30)
        assert f"pid {child.pid}" in lock.holder(tmp_path)
        with pytest.raises(RunDirError, match=f"being driven by pid {child.pid} on "):
            with lock.hold(tmp_path):
                pass
    finally:
        release.set()
        child.join(30)
    assert lock.holder(tmp_path) is None
    with lock.hold(tmp_path):  # free again once the holder is gone
        pass


@pytest.fixture
def no_flock(monkeypatch):
    """A file system mounted without working flock (Lustre `noflock`): flock fails with ENOLCK."""
    def refuse(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)


def test_without_flock_a_lease_holds_the_run_and_is_gone_after(tmp_path, no_flock):
    with lock.hold(tmp_path):
        assert "[lease" in lock.holder(tmp_path)
        with pytest.raises(RunDirError, match="being driven by pid"):
            with lock.hold(tmp_path):
                pass
    assert lock.holder(tmp_path) is None and not (tmp_path / lock.LEASE).exists()


def test_a_stale_lease_is_taken_over(tmp_path, no_flock):
    lease = tmp_path / lock.LEASE
    lease.write_text("pid 1 on gone-node (job 7)\n")
    old = time.time() - lock.STALE_S - 5
    os.utime(lease, (old, old))
    assert lock.holder(tmp_path) is None
    with lock.hold(tmp_path):
        assert f"pid {os.getpid()}" in lease.read_text()
    assert list(tmp_path.glob(".lease*")) == []


def test_the_lease_is_kept_fresh_while_held(tmp_path, no_flock, monkeypatch):
    monkeypatch.setattr(lock, "HEARTBEAT_S", 0.05)
    with lock.hold(tmp_path):
        lease = tmp_path / lock.LEASE
        old = time.time() - 1000
        os.utime(lease, (old, old))
        time.sleep(0.3)
        assert time.time() - lease.stat().st_mtime < 5


def test_a_lease_of_an_earlier_run_of_this_job_or_of_a_dead_local_process_is_taken_over_at_once(
        tmp_path, no_flock, monkeypatch):
    import socket
    import subprocess

    lease = tmp_path / lock.LEASE
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    lease.write_text("pid 4242 on other-node (job 7) [lease: this file system has no working flock]\n")
    assert lock.holder(tmp_path) is None  # fresh, but a requeued job's earlier processes are all gone
    lease.write_text("pid 4242 on other-node (job 8)\n")
    assert "job 8" in lock.holder(tmp_path)  # another job: alive as far as anyone here can tell
    gone = subprocess.Popen(["true"])
    gone.wait()
    lease.write_text(f"pid {gone.pid} on {socket.gethostname()}\n")
    assert lock.holder(tmp_path) is None
    with lock.hold(tmp_path):
        assert f"pid {os.getpid()}" in lease.read_text()


def test_hpctune_run_lock_lease_uses_the_lease_where_flock_works(tmp_path, monkeypatch):
    """For file systems whose flock is node-local (it works, but fences nothing across nodes)."""
    monkeypatch.setenv(lock.LOCK_KIND, "lease")
    with lock.hold(tmp_path):
        assert "[lease" in lock.holder(tmp_path) and not (tmp_path / lock.LOCK).exists()
        with pytest.raises(RunDirError, match="being driven by pid"):
            with lock.hold(tmp_path):
                pass
    assert lock.holder(tmp_path) is None
