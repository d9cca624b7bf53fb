"""This process while it hosts a Ray cluster's head and driver: its signals and environment.

Used by ``hpctune.raycluster.cluster``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping

log = logging.getLogger("hpctune.raycluster.cluster")


@contextlib.contextmanager
def exit_on_signals(enabled: bool) -> Iterator[None]:
    """Turn SIGTERM/SIGUSR2/SIGHUP into SystemExit so ``finally`` blocks run, for signals
    whose handler is still the default (a handler somebody else installed, e.g. submitit's,
    is left alone: it is expected to exit through Python too)."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    fired: list[int] = []

    def _raise(signum, _frame):
        if fired:  # already tearing down: a second signal must not cut the teardown short
            return
        fired.append(signum)
        log.info("signal %d: stopping the Ray cluster", signum)
        raise SystemExit(128 + signum)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGUSR2, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            previous[sig] = signal.signal(sig, _raise)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def environ(values: Mapping[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def disconnect_driver() -> None:
    ray = sys.modules.get("ray")
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        with contextlib.suppress(Exception):
            ray.shutdown()
