"""The run's lock: one driver per run directory, on any file system a cluster mounts.

`flock` where the file system supports it (the lock dies with the process, whatever kills it).
Where it is refused outright (Lustre mounted `noflock`, some NFS set-ups: ENOLCK, EOPNOTSUPP, ...),
a lease file instead: created exclusively, naming its holder (host, pid, Slurm job), its mtime
refreshed every HEARTBEAT_S by the holder; a lease not refreshed for STALE_S is a dead driver's and
is taken over, and so at once is one whose holder was an earlier run of this same Slurm job (a requeued
job's processes are all gone before it runs again) or a process of this host that no longer exists.
Two takers of one stale lease in the same instant could both win: the lease fences a second job or a
forgotten terminal, not a race of milliseconds.

Where flock seems to work but fences nothing across nodes (Lustre `localflock`, NFS `local_lock=flock`:
each node grants its own lock), nothing can detect it: `HPCTUNE_RUN_LOCK=lease` asks for the lease.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from hpctune.errors import RunDirError

LOCK = ".lock"
LEASE = ".lease"
HEARTBEAT_S = 20.0
STALE_S = 120.0
LOCK_KIND = "HPCTUNE_RUN_LOCK"  # "lease": no flock at all (node-local flock on a shared file system)


def holder_line() -> str:
    job = os.environ.get("SLURM_JOB_ID")
    return f"pid {os.getpid()} on {socket.gethostname()}" + (f" (job {job})" if job else "")


def _busy(run: Path, holder: str) -> RunDirError:
    return RunDirError(f"run {run} is being driven by {holder}: wait for it to finish or stop it first")


@contextlib.contextmanager
def hold(run: Path) -> Iterator[None]:
    """Hold the run for this process, or raise RunDirError naming who holds it."""
    run.mkdir(parents=True, exist_ok=True)
    if _lease_asked():
        with _lease(run):
            yield
        return
    fd = os.open(run / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(run, os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process") from None
        except OSError:  # no working flock on this file system
            os.close(fd)
            fd = -1
            with _lease(run):
                yield
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{holder_line()}\n".encode(), 0)
        yield
    finally:
        if fd >= 0:
            os.close(fd)  # closing releases the lock


def holder(run: Path) -> str | None:
    """Who holds the run now (None: nobody), without taking it."""
    try:
        fd = -1 if _lease_asked() else os.open(run / LOCK, os.O_RDONLY)
    except OSError:
        fd = -1
    if fd >= 0:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        except OSError:
            pass  # no flock here: the lease tells
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    return _live_lease(run / LEASE)


def _lease_asked() -> bool:
    return os.environ.get(LOCK_KIND, "").strip().lower() == "lease"


def _live_lease(path: Path) -> str | None:
    try:
        if time.time() - path.stat().st_mtime > STALE_S:
            return None
        text = path.read_text().strip()
    except OSError:
        return None
    return None if _holder_gone(text) else text or "another process"


def _holder_gone(line: str) -> bool:
    """Whether the holder named by a lease is known dead: an earlier run of this Slurm job, or a process
    of this host that does not exist."""
    found = re.match(r"pid (\d+) on (\S+)(?: \(job (\S+)\))?", line)
    if found is None:
        return False
    pid, host, job = int(found[1]), found[2], found[3]
    if pid == os.getpid():
        return False
    if job is not None and job == os.environ.get("SLURM_JOB_ID"):
        return True
    if host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False


@contextlib.contextmanager
def _lease(run: Path) -> Iterator[None]:
    path = run / LEASE
    live = _live_lease(path)
    if live is not None:
        raise _busy(run, live)
    if path.exists():  # a dead driver's: move it aside (one rename wins), then create ours
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, run / f"{LEASE}.stale-{uuid.uuid4().hex[:8]}")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        raise _busy(run, _live_lease(path) or "another process") from None
    with os.fdopen(fd, "w") as f:
        why = f"{LOCK_KIND}=lease" if _lease_asked() else "this file system has no working flock"
        f.write(f"{holder_line()} [lease: {why}]\n")
    for stale in run.glob(f"{LEASE}.stale-*"):
        stale.unlink(missing_ok=True)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(path, stop), daemon=True, name="hpctune-lease")
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        path.unlink(missing_ok=True)


def _heartbeat(path: Path, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        with contextlib.suppress(OSError):
            os.utime(path)
