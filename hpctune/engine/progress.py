"""Live progress of a search, printed by the driver in place of Ray Tune's own output.

On a terminal: a table that redraws itself (rich) with each trial's state, epoch, metric and the
hyperparameters that differ most between the trials, under a line with the best trial so far,
trials done/running/pending, elapsed time and an estimate of the time left; trial starts and ends
scroll above it. Anywhere else (a SLURM job log, a pipe): plain lines without control characters,
one line per event (trial started with its configuration; each epoch's result with the three
hyperparameters that differ most between the trials; trial stopped/completed/failed) and a status
line at most every HPCTUNE_PROGRESS_INTERVAL seconds (default 10) and at the end:

    [00:40] trial 3c1f2_00003 epoch 4/9: mAP50-95(B) 0.1234 (12.1 s) | lr0=0.0123 momentum=0.91
    [00:41] trials 2 done/2 running/4 pending | best 0.1234 (trial 3c1f2_00003, epoch 4) | eta ~01:20

HPCTUNE_PROGRESS=rich|plain|off overrides the choice made from sys.stdout.isatty().
The time left is an estimate: the mean seconds per epoch so far times the epochs ASHA is expected
to still run (each rung keeps 1/reduction_factor of the trials), spread over the running trials.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from ray.tune import Callback

from hpctune.engine.trial import trained_epoch_seconds
from hpctune.run.rundir import RunDir
from hpctune.run.spec import UNLIMITED_TRIALS, RunSpec

STATES = ("running", "pending", "completed", "stopped", "error")


def callbacks(spec: RunSpec, rundir: RunDir) -> list[Callback]:
    return [ProgressCallback(spec, [])]  # configurations are suggested as the search goes


def ray_verbosity() -> int:
    """Ray's own progress output is off: ProgressCallback prints instead."""
    return 0


# ---------------------------------------------------------------- pure logic

def rung_milestones(epochs: int, grace_period: int, reduction_factor: int) -> list[int]:
    """The epochs at which ASHA compares trials (as Ray's ASHAScheduler places its rungs)."""
    count = int(math.log(epochs / grace_period) / math.log(reduction_factor) + 1)  # as Ray computes it
    return sorted({grace_period * reduction_factor ** k for k in range(count)} - {epochs})


def expected_epochs_left(epoch: int, epochs: int, milestones: list[int], reduction_factor: int) -> float:
    """Epochs a trial now at `epoch` is expected to still train, if each rung keeps 1/rf of the trials."""
    left, survive, here = 0.0, 1.0, epoch
    for milestone in [*milestones, epochs]:
        if milestone <= epoch:
            continue
        left += survive * (milestone - here)
        here = milestone
        survive /= reduction_factor
    return left


def differing_keys(space: dict[str, Any], configs: list[dict[str, Any]], count: int) -> list[str]:
    """The searched hyperparameters whose sampled values cover most of their range, `count` of them."""
    scores: dict[str, float] = {}
    for key, dist in space.items():
        if not isinstance(dist, dict) or not dist:
            continue  # a fixed value
        kind, args = next(iter(dist.items()))
        values = [c[key] for c in configs if key in c]
        if len(values) < 2:
            scores[key] = 0.0
        elif kind == "choice" or not all(isinstance(v, (int, float)) for v in values):
            options = len(args) if isinstance(args, list) else len(values)
            scores[key] = (len({repr(v) for v in values}) - 1) / max(1, options - 1)
        else:
            low, high = float(min(values)), float(max(values))
            lo, hi = (float(args[0]), float(args[1])) if isinstance(args, list) and len(args) >= 2 else (low, high)
            if kind == "loguniform" and min(lo, low) > 0:
                low, high, lo, hi = map(math.log, (low, high, lo, hi))
            scores[key] = (high - low) / (hi - lo) if hi > lo else 0.0
    order = list(space)
    return sorted(scores, key=lambda k: (-scores[k], order.index(k)))[:count]


def fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(max(0.0, seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def short_metric(metric: str) -> str:
    return metric.split("/", 1)[-1]


@dataclass
class TrialView:
    trial_id: str
    state: str = "pending"
    epoch: int = 0
    metric: float | None = None
    best: float | None = None
    config: dict[str, Any] = field(default_factory=dict)
    error: str = ""


class Board:
    """What the progress display knows, fed with trial events; renders nothing itself."""

    def __init__(self, *, metric: str, epochs: int, grace_period: int, reduction_factor: int, total: int,
                 keys: list[str], start: float | None = None, baseline: dict[str, Any] | None = None,
                 budget_s: float | None = None):
        self.metric = metric
        self.baseline = baseline or None  # the untuned configuration: its trial is shown beside the best
        self.epochs = epochs
        self.reduction_factor = reduction_factor
        self.milestones = rung_milestones(epochs, grace_period, reduction_factor)
        self.total = total
        self.budget_s = budget_s or None  # --time-budget: new trials start until it ends
        self.keys = keys
        self.start = time.monotonic() if start is None else start
        self.trials: dict[str, TrialView] = {}
        self.best: tuple[float, str, int] | None = None  # value, trial, epoch
        self.epoch_seconds: list[float] = []

    def view(self, trial_id: str, config: dict[str, Any] | None = None) -> TrialView:
        view = self.trials.setdefault(trial_id, TrialView(trial_id))
        if config:
            view.config = dict(config)
        return view

    def baseline_view(self) -> TrialView | None:
        return next((v for v in self.trials.values() if self.baseline and v.config == self.baseline), None)

    def started(self, trial_id: str, config: dict[str, Any]) -> TrialView:
        view = self.view(trial_id, config)
        view.state = "running"
        return view

    def result(self, trial_id: str, result: dict[str, Any]) -> TrialView:
        view = self.view(trial_id)
        view.state = "running" if view.state == "pending" else view.state
        view.epoch = int(result.get("epoch") or result.get("training_iteration") or view.epoch)
        value = result.get(self.metric)
        if isinstance(value, (int, float)):
            view.metric = float(value)
            view.best = view.metric if view.best is None else max(view.best, view.metric)
            if self.best is None or view.metric > self.best[0]:
                self.best = (view.metric, trial_id, view.epoch)
        seconds = trained_epoch_seconds(result)
        if seconds is not None:
            self.epoch_seconds.append(seconds)
        return view

    def ended(self, trial_id: str, error: str = "") -> TrialView:
        view = self.view(trial_id)
        view.state = "error" if error else ("completed" if view.epoch >= self.epochs else "stopped")
        view.error = error
        return view

    @property
    def capped(self) -> bool:
        """Whether the search has a trial count (without one, a time budget ends it: nothing is pending)."""
        return self.total < UNLIMITED_TRIALS

    def counts(self) -> dict[str, int]:
        counts = {state: 0 for state in STATES}
        for view in self.trials.values():
            counts[view.state] += 1
        if self.capped:
            counts["pending"] += max(0, self.total - len(self.trials))
        return counts

    def elapsed(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.start

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left, or None before the first epoch time is known."""
        if not self.epoch_seconds:
            return None
        counts = self.counts()
        per_epoch = sum(self.epoch_seconds) / len(self.epoch_seconds)
        running = [v for v in self.trials.values() if v.state == "running"]
        left_each = [expected_epochs_left(v.epoch, self.epochs, self.milestones, self.reduction_factor)
                     for v in running]
        fresh = expected_epochs_left(0, self.epochs, self.milestones, self.reduction_factor)
        work = sum(left_each) + counts["pending"] * fresh
        parallel = max(1, len(running))
        by_count = max(work / parallel, max(left_each, default=0.0)) * per_epoch
        if self.budget_s is None:
            return by_count
        # with a budget, new trials stop at its end; the running ones then finish
        by_budget = max(self.budget_s - self.elapsed(now), max(left_each, default=0.0) * per_epoch)
        return min(by_budget, by_count) if counts["pending"] else by_budget

    def status_line(self, now: float | None = None) -> str:
        counts = self.counts()
        done = counts["completed"] + counts["stopped"] + counts["error"]
        parts = [f"trials {done} done/{counts['running']} running/{counts['pending']} pending"
                 if self.capped else f"trials {done} done/{counts['running']} running"]
        if counts["stopped"] or counts["error"]:
            parts[0] += f" ({counts['stopped']} stopped by ASHA" + (
                f", {counts['error']} failed)" if counts["error"] else ")")
        if self.best is not None:
            value, trial_id, epoch = self.best
            parts.append(f"best {value:.4f} (trial {trial_id}, epoch {epoch})")
            base = self.baseline_view()
            if base is not None and base.metric is not None:
                parts[-1] += f" vs baseline {base.metric:.4f}, {value - base.metric:+.4f}"
        else:
            parts.append("best -")
        open_ended = self.budget_s is not None and self.elapsed(now) < self.budget_s
        parts.append(f"eta ~{fmt_duration(self.eta(now))}" if counts["running"] or counts["pending"] or open_ended
                     else "all done")
        return f"[{fmt_duration(self.elapsed(now))}] " + " | ".join(parts)

    def rows(self, limit: int = 20) -> tuple[list[TrialView], int]:
        """Running trials first, then the others by metric; at most `limit`, and how many were left out."""
        order = {"running": 0, "completed": 1, "stopped": 1, "error": 2, "pending": 3}
        views = sorted(self.trials.values(), key=lambda v: (order[v.state], -(v.best if v.best is not None
                                                                              else -math.inf), v.trial_id))
        return views[:limit], max(0, len(views) - limit)


def one_line(text: str) -> str:
    """Text safe for a job log: printable characters only, on one line."""
    text = " ".join(str(text).split())
    return "".join(ch if ch.isprintable() else "?" for ch in text)


# ---------------------------------------------------------------- displays

class PlainDisplay:
    """Line-based output for job logs and pipes: no control characters, one line per update."""

    def __init__(self, board: Board, stream: TextIO, interval_s: float):
        self.board = board
        self.stream = stream
        self.interval_s = interval_s
        self._status_at = -math.inf
        self._status_text = ""

    def say(self, text: str) -> None:
        self.stream.write(f"[{fmt_duration(self.board.elapsed())}] {one_line(text)}\n")
        self.stream.flush()

    def status(self, force: bool = False) -> None:
        now = time.monotonic()
        text = self.board.status_line(now)
        changed = text.split("] ", 1)[-1] != self._status_text
        if force or (changed and now - self._status_at >= self.interval_s):
            self.stream.write(one_line(text) + "\n")
            self.stream.flush()
            self._status_at, self._status_text = now, text.split("] ", 1)[-1]

    def refresh(self) -> None:
        self.status()

    def close(self) -> None:
        self.status(force=True)


class RichDisplay:
    """A live table on a terminal; events scroll above it."""

    def __init__(self, board: Board, stream: TextIO, interval_s: float = 1.0):
        from rich.console import Console
        from rich.live import Live

        self.board = board
        self.console = Console(file=stream)
        self.live = Live(console=self.console, auto_refresh=False, transient=False, redirect_stderr=True,
                         redirect_stdout=False)
        self.interval_s = interval_s
        self._drawn = -math.inf
        self._rerouted: list[tuple[logging.StreamHandler, Any]] = []
        self.live.start()
        self._reroute_log_handlers()

    def _reroute_log_handlers(self) -> None:
        """Log handlers made before the display hold the raw terminal: send them through the display
        (rich's Live put a proxy in sys.stderr), so log lines scroll above the table instead of tearing it."""
        raw = {id(sys.__stderr__), id(sys.__stdout__), id(self.console.file)}
        loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values()
                                          if isinstance(v, logging.Logger))]
        for logger in loggers:
            for handler in logger.handlers:
                if (isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
                        and id(getattr(handler, "stream", None)) in raw):
                    self._rerouted.append((handler, handler.setStream(sys.stderr)))

    def say(self, text: str) -> None:
        from rich.text import Text

        self.live.console.print(Text(f"[{fmt_duration(self.board.elapsed())}] {one_line(text)}"))
        self.refresh(force=True)

    def status(self, force: bool = False) -> None:
        self.refresh(force)

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._drawn >= self.interval_s:
            self._drawn = now
            self.live.update(render_table(self.board, self.console.size.height), refresh=True)

    def close(self) -> None:
        self.refresh(force=True)
        self.live.stop()
        for handler, stream in self._rerouted:
            handler.setStream(stream)
        self._rerouted.clear()


_STYLE = {"running": "cyan", "completed": "green", "stopped": "yellow", "error": "red", "pending": "dim"}


def render_table(board: Board, height: int = 40):
    """The rich renderable: the status line over the trial table."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("trial")
    table.add_column("state")
    table.add_column("epoch", justify="right")
    table.add_column(short_metric(board.metric), justify="right")
    table.add_column("best", justify="right")
    for key in board.keys:
        table.add_column(key, justify="right")
    views, hidden = board.rows(limit=max(3, height - 8))
    best_trial = board.best[1] if board.best else None
    for view in views:
        table.add_row(
            Text(view.trial_id, style="bold" if view.trial_id == best_trial else ""),
            Text(view.state, style=_STYLE[view.state]),
            f"{view.epoch}/{board.epochs}" if view.epoch else "-",
            "-" if view.metric is None else f"{view.metric:.4f}",
            "-" if view.best is None else f"{view.best:.4f}",
            *(fmt_value(view.config.get(key, "")) for key in board.keys),
        )
    parts: list[Any] = [Text(board.status_line(), style="bold"), table]
    if hidden:
        parts.append(Text(f"... {hidden} more trials", style="dim"))
    return Group(*parts)


# ---------------------------------------------------------------- the Ray Tune callback

def choose_mode(stream: TextIO) -> str:
    wanted = os.environ.get("HPCTUNE_PROGRESS", "").strip().lower()
    if wanted in {"rich", "plain", "off"}:
        return wanted
    try:
        return "rich" if stream.isatty() else "plain"
    except (AttributeError, ValueError):
        return "plain"


class ProgressCallback(Callback):
    """Feeds the Board from Ray Tune's events and draws it. Picklable: the display starts in setup()."""

    def __init__(self, spec: RunSpec, configs: list[dict[str, Any]]):
        self.name = spec.name
        self.metric = spec.metric
        self.epochs = spec.epochs
        self.grace_period = spec.grace_period
        self.reduction_factor = spec.reduction_factor
        self.total = len(configs) or spec.max_samples
        self.keys_plain = differing_keys(spec.space, configs, 3)
        self.keys_rich = differing_keys(spec.space, configs, 5)
        self.baseline = spec.baseline
        self.budget_s = spec.time_budget_s or None
        self.board: Board | None = None
        self.display: PlainDisplay | RichDisplay | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "board": None, "display": None}

    def setup(self, **info):
        self.total = info.get("total_num_samples") or self.total  # a grown search (resume --max-samples)
        stream = sys.stdout
        mode = choose_mode(stream)
        if mode == "off":
            return
        keys = self.keys_rich if mode == "rich" else self.keys_plain
        self.board = Board(metric=self.metric, epochs=self.epochs, grace_period=self.grace_period,
                           reduction_factor=self.reduction_factor, total=self.total, keys=keys,
                           baseline=self.baseline, budget_s=getattr(self, "budget_s", None))
        interval = float(os.environ.get("HPCTUNE_PROGRESS_INTERVAL", "10"))
        try:
            self.display = RichDisplay(self.board, stream) if mode == "rich" else PlainDisplay(
                self.board, stream, interval)
        except Exception:  # noqa: BLE001  (a terminal rich cannot drive: fall back to lines)
            self.display = PlainDisplay(self.board, stream, interval)
        rungs = ", ".join(map(str, self.board.milestones)) or "none"
        trials = f"{self.total} trials" if self.board.capped else "trials until the time budget ends"
        self.display.say(f"search {self.name}: {trials} of up to {self.epochs} epochs; ASHA keeps "
                         f"1/{self.reduction_factor} at epochs {rungs}; metric {self.metric}")

    def _sync(self, trials) -> None:
        """Trials restored from an earlier session arrive without events: take them from Ray's list."""
        for trial in trials:
            if trial.trial_id in self.board.trials:
                continue
            view = self.board.view(trial.trial_id, trial.config)
            if trial.last_result:
                self.board.result(trial.trial_id, {**trial.last_result, "time_this_iter_s": None})
            view.state = "pending"
            if trial.status == "TERMINATED":
                self.board.ended(trial.trial_id)
            elif trial.status == "ERROR":
                self.board.ended(trial.trial_id, error="failed")
            elif trial.status in {"RUNNING", "PAUSED"}:
                view.state = "running"

    def _safe(self, func, *args) -> None:
        if self.display is None:
            return
        try:
            func(*args)
        except Exception as exc:  # noqa: BLE001  (progress output must never end a search)
            self.display = None
            print(f"hpctune: progress display stopped: {type(exc).__name__}: {exc}", file=sys.stderr)

    def on_step_end(self, iteration, trials, **info):
        self._safe(self._step, trials)

    def _step(self, trials) -> None:
        self._sync(trials)
        self.display.refresh()

    def on_trial_start(self, iteration, trials, trial, **info):
        self._safe(self._start, trials, trial)

    def _start(self, trials, trial) -> None:
        self._sync([t for t in trials if t is not trial])
        self.board.started(trial.trial_id, trial.config)
        shown = " ".join(f"{k}={fmt_value(v)}" for k, v in trial.config.items())
        self.display.say(f"trial {trial.trial_id} started: {shown}".rstrip())

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._safe(self._result, trial, result)

    def _result(self, trial, result) -> None:
        view = self.board.result(trial.trial_id, result)
        if isinstance(self.display, PlainDisplay):
            value = "-" if view.metric is None else f"{view.metric:.4f}"
            seconds = result.get("time_this_iter_s")
            pace = f" ({seconds:.1f} s)" if isinstance(seconds, (int, float)) else ""
            shown = " ".join(f"{k}={fmt_value(view.config[k])}" for k in self.board.keys if k in view.config)
            self.display.say(f"trial {trial.trial_id} epoch {view.epoch}/{self.epochs}: "
                             f"{short_metric(self.metric)} {value}{pace}" + (f" | {shown}" if shown else ""))
        self.display.status()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._safe(self._end, trial, "")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._safe(self._end, trial, _error_text(trial))

    def _end(self, trial, error: str) -> None:
        view = self.board.ended(trial.trial_id, error)
        value = "-" if view.metric is None else f"{view.metric:.4f}"
        metric = short_metric(self.metric)
        if view.state == "error":
            text = f"trial {trial.trial_id} failed at epoch {view.epoch}: {error}"
        elif view.state == "stopped":
            text = f"trial {trial.trial_id} stopped by ASHA after epoch {view.epoch}: {metric} {value}"
        else:
            text = f"trial {trial.trial_id} completed {view.epoch} epochs: {metric} {value}"
        self.display.say(text)
        self.display.status()

    def on_experiment_end(self, trials, **info):
        self._safe(self._close, trials)

    def _close(self, trials) -> None:
        self._sync(trials)
        self.display.close()
        self.display = None


def _error_text(trial) -> str:
    try:
        error_file = trial.error_file
        if error_file and os.path.exists(error_file):
            lines = [line for line in open(error_file).read().splitlines() if line.strip()]
            if lines:
                return lines[-1][:200]
    except Exception:  # noqa: BLE001
        pass
    return "see the trial's error file under the run directory's tune/ folder"
