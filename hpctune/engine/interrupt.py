"""A graceful end of the search on a signal (preemption, time limit, `hpctune cancel`).

The driver installs `StopRequest` for USR2 and TERM. The first such signal, inside Ray Tune's
`fit()` loop, calls Tune's own stop handler (the one Tune registers for SIGUSR1): Tune ends its
loop, writes the experiment state (with ASHA's rungs, see asha.py) one last time and stops the
trials, which keep every epoch they checkpointed. Before that loop runs (cluster bring-up, Tuner
restore) the stop is held: the caller checks `pending()` at safe points and leaves, and a watcher
hands the signal to Tune the moment Tune listens. The handler never raises: an exception thrown
from a signal handler into C++ code on the stack (torch's import, Ray's core) aborts the process.
Later signals are ignored: the stop that is under way must not be cut short. A stop that runs past
`deadline_s` (a callback that hangs, a slow last snapshot) calls `on_overrun` from a watchdog thread,
so that whatever must happen before the time limit (the requeue) still happens in time.

`ray.init()` replaces the SIGTERM handler with its own, so the driver installs this again once
connected (search.run's `on_connect`, which is `StopRequest.connected`). Where the driver is a child
process (a SLURM job's, see hpctune.jobs.driver_process), the parent's request has `tune_here` False: it
only remembers the stop, which the parent hands to the child. Knows nothing of SLURM.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


class JobInterrupted(BaseException):  # noqa: N818  (not an error: a stop before the search ran)
    """Raised at a safe point when a stop signal came before Ray Tune could take it; a
    BaseException, so that no `except Exception` on the way swallows it."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def _tune_listens() -> bool:
    return callable(signal.getsignal(signal.SIGUSR1))  # Ray Tune's handler, from fit() on


class StopRequest:
    """Remembers the first stop signal and turns it into a graceful end of the search."""

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS,
                 deadline_s: float | Callable[[int], float] | None = None,
                 on_overrun: Callable[[int], None] | None = None, tune_here: bool = True):
        self.signals = signals
        self.signum: int | None = None
        self.deadline_s, self.on_overrun = deadline_s, on_overrun
        self.tune_here = tune_here  # False: Ray Tune runs in another process, which is handed the stop
        self._ended = threading.Event()

    def ended(self) -> None:
        """The stop (or the search) is over: the watchdog has nothing left to do."""
        self._ended.set()

    def deadline_for(self, signum: int) -> float:
        """Seconds the stop after `signum` may take (a function of the signal: a TERM leaves less time)."""
        return float(self.deadline_s(signum) if callable(self.deadline_s) else self.deadline_s)

    def _watch(self, signum: int) -> None:
        deadline = self.deadline_for(signum)
        if self._ended.wait(deadline):
            return
        log.warning("the stop is still running %.0f s after %s (a hanging callback?): acting now, before the "
                    "job is killed", deadline, signal.Signals(signum).name)
        self.on_overrun(signum)

    @property
    def name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    def install(self, signals: tuple[int, ...] | None = None) -> None:
        """Handle `signals` (default: all of this request's) from now on; main thread only."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in signals or self.signals:
            signal.signal(sig, self._handle)

    def pending(self) -> bool:
        return self.signum is not None

    def check(self) -> None:
        """At a safe point (plain Python, nothing half done): leave if a stop came."""
        if self.signum is not None:
            raise JobInterrupted(self.signum)

    def connected(self) -> None:
        """search.run's on_connect: handle the signals again (ray.init took SIGTERM), then check."""
        self.install()
        self.check()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            return
        self.signum = signum
        if self.deadline_s is not None and self.on_overrun is not None:
            threading.Thread(target=self._watch, args=(signum,), name="hpctune-stop-deadline", daemon=True).start()
        if not self.tune_here:
            log.warning("%s: stopping the search", self.name)
            return
        if _tune_listens():
            log.warning("%s: stopping the search (experiment state saved, trials keep their epochs)", self.name)
            signal.getsignal(signal.SIGUSR1)(signal.SIGUSR1, frame)
            return
        log.warning("%s: the search stops as soon as it has started", self.name)
        threading.Thread(target=_hand_to_tune, name="hpctune-stop", daemon=True).start()


def _hand_to_tune(poll_s: float = 0.1) -> None:
    """Send SIGUSR1 to this process once Ray Tune handles it (before that it would kill us)."""
    while not _tune_listens():
        time.sleep(poll_s)
    os.kill(os.getpid(), signal.SIGUSR1)


def ignore_in_children(sig: int = signal.SIGUSR2) -> None:
    """Ignore `sig` in this process, so the processes it starts from now on inherit that.

    Slurm sends a job's --signal to every process of its steps. Ray's daemons and trial
    workers would die of USR2 (its default action); ignored, only the driver reacts to it."""
    signal.signal(sig, signal.SIG_IGN)
