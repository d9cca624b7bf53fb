"""Experiment tracking of a search: W&B runs, TensorBoard event files and a live results table.

Everything here runs on the driver, from Ray Tune callbacks; trial processes never talk to W&B.

- W&B (`--wandb`): one run per trial (name = trial id, group = the search), its config the
  trial's hyperparameters plus the search's fixed settings, its history the per-epoch metrics with
  step = epoch. Each run is fed by its own thread, so a slow `wandb.init` never holds up the
  search. Mode `auto` is online only where the W&B server answers a TCP connect within 2 s and a
  W&B login exists on this node; otherwise runs are written offline to RUN_DIR/wandb/offline-run-*
  and uploaded later with `hpctune sync RUN_DIR` from a node with internet access. hpctune never
  reads the API key into anything it writes or passes on: wandb finds it itself (WANDB_API_KEY or
  `wandb login`), in the driver process only. A tracking failure is logged, never fatal.
- TensorBoard: RUN_DIR/tensorboard/<trial_id>/events.out.tfevents.*, step = epoch
  (`tensorboard --logdir RUN_DIR/tensorboard`).
- results.csv: rewritten from the experiment state at most every 30 s while the search runs
  (search.py writes the final one).
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ray.tune import Callback

from hpctune.engine.asha import SCORE
from hpctune.errors import HpctuneError
from hpctune.run.rundir import RunDir
from hpctune.run.spec import RunSpec

log = logging.getLogger(__name__)

WANDB_DIR = "wandb"  # RUN_DIR/wandb/offline-run-* (wandb adds the last level itself)
TENSORBOARD_DIR = "tensorboard"
PROBE_TIMEOUT_S = 2.0
DEFAULT_WANDB_URL = "https://api.wandb.ai"
# Ray's bookkeeping in every result: not worth a W&B or TensorBoard series.
_RAY_KEYS = {
    "timestamp", "training_iteration", "time_since_restore", "iterations_since_restore", "pid", "done",
    "date", "hostname", "node_ip", "time_total_s", "time_this_iter_s", "checkpoint_dir_name",
    "should_checkpoint", "trial_id", "experiment_tag", "config", "epoch",
    SCORE,  # hpctune's own ranking key for ASHA, not a metric of the trial
}


class SyncError(HpctuneError):
    """Offline W&B runs that could not be uploaded."""


def callbacks(spec: RunSpec, rundir: RunDir) -> list[Callback]:
    found: list[Callback] = [ResultsTableCallback(rundir.path, spec), TensorBoardCallback(rundir.path)]
    if spec.wandb:
        found.append(WandbCallback(spec, rundir.path))
    return found


def trial_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The numbers a trial reported (YOLO's metrics and losses), without Ray's bookkeeping."""
    metrics = {k: float(v) for k, v in result.items()
               if k not in _RAY_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)}
    if isinstance(result.get("time_this_iter_s"), (int, float)):
        metrics["time/epoch_s"] = float(result["time_this_iter_s"])
    return metrics


def _ended_state(trial, epochs: int, error: bool = False) -> str:
    if error or trial.status == "ERROR":
        return "error"
    epoch = (trial.last_result or {}).get("epoch") or 0
    return "completed" if epoch >= epochs else "stopped"


class _Guarded(Callback):
    """Tracking must never end a search: a failing hook is logged once and the callback goes quiet."""

    _broken = False

    def _guard(self, func, *args) -> None:
        if self._broken:
            return
        try:
            func(*args)
        except Exception as exc:  # noqa: BLE001  (any tracking failure)
            self._broken = True
            log.warning("%s stopped after an error: %s: %s", type(self).__name__, type(exc).__name__, exc)


# ---------------------------------------------------------------- results.csv, live

class ResultsTableCallback(_Guarded):
    """Keeps RUN_DIR/results.csv current while the search runs (every 30 s, and when a trial ends
    if the last write is 5 s old or more).

    The rows come from Ray's live trial list and the trials' records (each parsed again only when
    it changed): a write never loads the experiment state, whose size grows with the trials.
    """

    def __init__(self, run_dir: Path, spec: RunSpec, interval_s: float = 30.0, end_gap_s: float = 5.0):
        self.run_dir = Path(run_dir)
        self.spec = spec
        self.interval_s = interval_s
        self.end_gap_s = end_gap_s
        self._written = 0.0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_written": 0.0, "_broken": False}

    def _write(self, trials, gap_s: float) -> None:
        if time.monotonic() - self._written < gap_s:
            return
        self._written = time.monotonic()
        from hpctune.run.results import _write_csv, trial_rows

        rundir = RunDir(self.run_dir)
        _write_csv(rundir.results_csv, trial_rows(rundir, self.spec, trials))

    def _try(self, trials, gap_s: float) -> None:
        try:
            self._write(trials, gap_s)
        except Exception as exc:  # noqa: BLE001  (the next write will do)
            log.debug("results.csv not refreshed: %s: %s", type(exc).__name__, exc)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._try(trials, self.interval_s)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._try(trials, min(self.interval_s, self.end_gap_s))


# ---------------------------------------------------------------- TensorBoard

class TensorBoardCallback(_Guarded):
    """One TensorBoard run per trial under RUN_DIR/tensorboard/<trial_id>, step = epoch."""

    def __init__(self, run_dir: Path):
        self.folder = Path(run_dir) / TENSORBOARD_DIR
        self._writers: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_writers": {}, "_broken": False}

    def _writer(self, trial):
        if trial.trial_id not in self._writers:
            from tensorboardX import SummaryWriter

            writer = SummaryWriter(str(self.folder / trial.trial_id), flush_secs=30)
            text = "\n".join(f"    {k}: {v}" for k, v in sorted(trial.config.items()))
            writer.add_text("config", text or "(no searched hyperparameters)", 0)
            self._writers[trial.trial_id] = writer
        return self._writers[trial.trial_id]

    def _result(self, trial, result) -> None:
        epoch = int(result.get("epoch") or result.get("training_iteration") or 0)
        writer = self._writer(trial)
        for key, value in trial_metrics(result).items():
            writer.add_scalar(key, value, epoch)  # written within flush_secs, and on close: no fsync per result

    def _close(self, trial) -> None:
        writer = self._writers.pop(trial.trial_id, None)
        if writer is not None:
            writer.close()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._guard(self._result, trial, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._guard(self._close, trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._guard(self._close, trial)

    def on_experiment_end(self, trials, **info):
        for trial_id in list(self._writers):
            self._writers.pop(trial_id).close()


# ---------------------------------------------------------------- W&B

def wandb_server() -> str:
    """The W&B server this node would talk to: WANDB_BASE_URL, `wandb login --host`, or the default."""
    url = os.environ.get("WANDB_BASE_URL")
    if url:
        return url
    try:
        import wandb

        return str(wandb.setup().settings.base_url or DEFAULT_WANDB_URL)
    except Exception:  # noqa: BLE001
        return DEFAULT_WANDB_URL


def server_address(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "//" in url else f"https://{url}")
    return parts.hostname or "", parts.port or (80 if parts.scheme == "http" else 443)


def reachable(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the server opens within timeout_s (name lookup included)."""
    host, port = server_address(url)
    outcome: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            outcome.append(True)
        except OSError:
            outcome.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo ignores socket timeouts
    thread.start()
    thread.join(timeout_s + 0.5)
    return bool(outcome and outcome[0])


def has_login(url: str) -> bool:
    """Whether wandb finds credentials for the server on this node (env or netrc), without prompting."""
    try:
        from wandb.sdk.lib.wbauth.authenticate import authenticate_session
    except ImportError:  # another wandb: trust the environment or netrc
        import netrc

        if os.environ.get("WANDB_API_KEY"):
            return True
        try:
            return netrc.netrc().authenticators(server_address(url)[0]) is not None
        except (OSError, netrc.NetrcParseError):
            return False
    try:
        return authenticate_session(host=url, source="hpctune", prompt=False, update_session=False) is not None
    except Exception:  # noqa: BLE001  (a malformed key counts as none)
        return False


def resolve_mode(mode: str, run_dir: Path) -> str:
    """online or offline for this node; says why when `auto` or a missing login picks offline."""
    if mode == "offline":
        log.info("W&B runs are written offline to %s; upload them with `hpctune sync %s`",
                 run_dir / WANDB_DIR, run_dir)
        return "offline"
    url = wandb_server()
    if mode == "auto" and not reachable(url):
        host, port = server_address(url)
        log.warning("W&B server %s:%d is not reachable from %s: W&B runs are kept offline in %s; "
                    "upload them later with `hpctune sync %s` on a node with internet access",
                    host, port, socket.gethostname(), run_dir / WANDB_DIR, run_dir)
        return "offline"
    if not has_login(url):
        log.warning("no W&B login on %s (run `wandb login` or set WANDB_API_KEY): W&B runs are kept offline "
                    "in %s; upload them later with `hpctune sync %s`", socket.gethostname(),
                    run_dir / WANDB_DIR, run_dir)
        return "offline"
    return "online"


def wandb_run_id(search: str, trial_id: str) -> str:
    """A W&B run id unique to the search and trial (W&B ids: letters, digits, - and _)."""
    text = re.sub(r"[^A-Za-z0-9_-]", "-", f"{search}-{trial_id}")
    if len(text) <= 64:
        return text
    digest = hashlib.sha1(text.encode()).hexdigest()[:10]  # stable across sessions, unlike hash()
    return f"{text[:64 - len(trial_id) - 12]}-{digest}-{trial_id}"


_END = object()


class _RunFeeder(threading.Thread):
    """Owns one W&B run: init, then log what the queue brings, then finish."""

    def __init__(self, init_kwargs: dict[str, Any]):
        super().__init__(name=f"wandb-{init_kwargs['name']}", daemon=True)
        self.init_kwargs = init_kwargs
        self.queue: queue.Queue = queue.Queue()

    def _init(self):
        import wandb

        name = self.init_kwargs["name"]
        try:
            return wandb.init(**self.init_kwargs)
        except Exception as exc:  # noqa: BLE001
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if self.init_kwargs["mode"] != "online":
                log.warning("W&B run of trial %s did not start (%s): the trial goes on without it", name, why)
                return None
            log.warning("W&B run of trial %s did not start online (%s): writing it offline instead "
                        "(upload later with `hpctune sync`)", name, why)
        try:  # wandb keeps the failed run's id busy in this process: the offline copy gets its own
            offline_id = f"{self.init_kwargs['id'][:56]}-offline"
            return wandb.init(**{**self.init_kwargs, "mode": "offline", "id": offline_id})
        except Exception as exc:  # noqa: BLE001
            log.warning("W&B run of trial %s did not start offline either (%s): the trial goes on without it",
                        name, exc)
            return None

    def run(self) -> None:
        run = self._init()
        if run is None:
            while self.queue.get() is not _END:
                pass
            return
        warned = False
        exit_code = 0
        while True:
            item = self.queue.get()
            if item is _END:
                break
            kind, payload = item
            try:
                if kind == "log":
                    metrics, step = payload
                    run.log(metrics, step=step)
                else:  # "end"
                    run.summary["hpctune/state"] = payload
                    exit_code = 1 if payload == "error" else 0
            except Exception as exc:  # noqa: BLE001
                if not warned:
                    log.warning("W&B logging of trial %s failed: %s", self.init_kwargs["name"], exc)
                    warned = True
        try:
            run.finish(exit_code=exit_code)
        except Exception as exc:  # noqa: BLE001
            log.warning("W&B run of trial %s did not finish cleanly: %s", self.init_kwargs["name"], exc)


class WandbCallback(_Guarded):
    """One W&B run per trial, fed from the driver."""

    def __init__(self, spec: RunSpec, run_dir: Path, finish_timeout_s: float = 120.0):
        self.options = dict(spec.wandb)
        self.search = spec.name
        self.epochs = spec.epochs
        self.run_dir = Path(run_dir)
        self.finish_timeout_s = finish_timeout_s
        self.fixed = {
            "hpctune/run": spec.name, "hpctune/run_dir": str(run_dir), "hpctune/model": spec.model,
            "hpctune/data": spec.data, "hpctune/epochs": spec.epochs, "hpctune/metric": spec.metric,
            "hpctune/grace_period": spec.grace_period, "hpctune/reduction_factor": spec.reduction_factor,
            **{f"train/{k}": v for k, v in spec.train_args.items()},
        }
        self._mode: str | None = None
        self._feeders: dict[str, _RunFeeder] = {}  # trials running now
        self._ended: list[_RunFeeder] = []  # finishing or finished

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_mode": None, "_feeders": {}, "_ended": [], "_broken": False}

    def setup(self, **info):
        self._guard(self._setup)

    def _setup(self) -> None:
        self._mode = resolve_mode(self.options.get("mode") or "auto", self.run_dir)
        (self.run_dir / WANDB_DIR).mkdir(parents=True, exist_ok=True)

    def _feeder(self, trial) -> _RunFeeder:
        feeder = self._feeders.get(trial.trial_id)
        if feeder is None:
            import wandb

            kwargs = {
                "project": self.options.get("project") or "hpctune", "entity": self.options.get("entity"),
                "group": self.options.get("group") or self.search, "name": trial.trial_id,
                "id": wandb_run_id(self.search, trial.trial_id), "job_type": "trial", "resume": "allow",
                "dir": str(self.run_dir), "mode": self._mode or "offline", "reinit": "create_new",
                "config": {**self.fixed, **trial.config, "hpctune/trial_id": trial.trial_id},
                "settings": wandb.Settings(silent=True, console="off", x_disable_stats=True, save_code=False,
                                           disable_git=True),
            }
            feeder = self._feeders[trial.trial_id] = _RunFeeder(kwargs)
            feeder.start()
        return feeder

    def _result(self, trial, result) -> None:
        step = int(result.get("epoch") or result.get("training_iteration") or 0)
        self._feeder(trial).queue.put(("log", ({**trial_metrics(result), "epoch": step}, step)))

    def _end(self, trial, error: bool = False) -> None:
        feeder = self._feeders.pop(trial.trial_id, None)
        if feeder is not None:
            feeder.queue.put(("end", _ended_state(trial, self.epochs, error)))
            feeder.queue.put(_END)
            self._ended.append(feeder)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._guard(self._feeder, trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._guard(self._result, trial, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._guard(self._end, trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._guard(self._end, trial, True)

    def on_experiment_end(self, trials, **info):
        """Let every run finish writing (or uploading), within finish_timeout_s in all."""
        deadline = time.monotonic() + self.finish_timeout_s
        for feeder in self._feeders.values():  # trials the search left unfinished (interrupted)
            feeder.queue.put(("end", "interrupted"))
            feeder.queue.put(_END)
        feeders = [*self._ended, *self._feeders.values()]
        for feeder in feeders:
            feeder.join(max(0.0, deadline - time.monotonic()))
        late = [feeder.init_kwargs["name"] for feeder in feeders if feeder.is_alive()]
        if late:
            log.warning("W&B runs of %s still writing after %.0f s: their last results may be missing",
                        ", ".join(late), self.finish_timeout_s)
        self._feeders.clear()
        self._ended.clear()


# ---------------------------------------------------------------- hpctune sync

def offline_runs(run_dir: Path) -> list[Path]:
    """The offline W&B run folders of a run directory, oldest first."""
    folders = [p for p in (Path(run_dir) / WANDB_DIR).glob("offline-run-*") if p.is_dir()]
    return sorted(folders, key=lambda p: p.name)


def is_synced(folder: Path) -> bool:
    return any(folder.glob("*.wandb.synced"))


def _run_id(folder: Path) -> str:
    return folder.name.split("-", 3)[-1]


def sync(run_dir: str | Path, timeout_s: float = 3600.0, echo=print) -> list[Path]:
    """Upload the run directory's offline W&B runs with `wandb sync`; never deletes anything.

    Returns the folders uploaded now; raises SyncError naming the ones that were not.
    """
    rundir = RunDir(run_dir)
    rundir.read_manifest()  # a clear error for a folder that is not a run
    folders = offline_runs(rundir.path)
    if not folders:
        raise SyncError(f"{rundir.path} has no offline W&B runs (in {rundir.path / WANDB_DIR}): "
                        "nothing to upload; was the search run with --wandb?")
    todo = [f for f in folders if not is_synced(f)]
    for folder in folders:
        if folder not in todo:
            echo(f"already uploaded  {_run_id(folder)}  ({folder.name})")
    if not todo:
        echo(f"all {len(folders)} offline W&B runs of {rundir.path.name} were uploaded before")
        return []
    url = wandb_server()
    host, port = server_address(url)
    echo(f"uploading {len(todo)} offline W&B run(s) of {rundir.path.name} to {url} ...")
    env = dict(os.environ)
    # Fail within seconds, not hours, where the server cannot be reached; a reachable server
    # keeps wandb's own patience for uploads.
    for key, value in {"WANDB__GRAPHQL_RETRY_MAX": "3", "WANDB__GRAPHQL_RETRY_WAIT_MAX_SECONDS": "5",
                       "WANDB__FILE_STREAM_RETRY_MAX": "3", "WANDB__FILE_TRANSFER_RETRY_MAX": "3"}.items():
        env.setdefault(key, value)
    command = [sys.executable, "-m", "wandb", "sync", "--no-include-synced", "-n", "4", *map(str, todo)]
    try:
        process = subprocess.run(command, cwd=rundir.path / WANDB_DIR, env=env, stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True, timeout=timeout_s)
        output = process.stdout + process.stderr
    except subprocess.TimeoutExpired as exc:
        output = f"{exc.stdout or ''}{exc.stderr or ''}\nwandb sync timed out after {timeout_s:.0f} s"
    uploaded = [f for f in todo if is_synced(f)]
    failed = [f for f in todo if f not in uploaded]
    for folder in uploaded:
        echo(f"uploaded          {_run_id(folder)}  ({folder.name})")
    for folder in failed:
        echo(f"not uploaded      {_run_id(folder)}  ({folder.name})")
    if failed:
        reason = _sync_error(output)
        where = "" if reachable(url) else f"; {host}:{port} cannot be reached from {socket.gethostname()}"
        raise SyncError(
            f"{len(failed)} of {len(todo)} offline W&B runs not uploaded ({reason}{where}); nothing was deleted: "
            f"run `hpctune sync {rundir.path}` again where the server is reachable and you are logged in "
            "(`wandb login`)"
        )
    return uploaded


def _sync_error(output: str) -> str:
    """The most telling line of wandb's output, one line."""
    lines = [re.sub(r"^wandb:\s*", "", line).strip() for line in output.splitlines()]
    picked = [line for line in lines if line.startswith(("ERROR", "Error"))]
    picked = [line for line in picked if "detailed error logs" not in line] or picked or [
        line for line in lines if line][-1:]
    text = picked[0] if picked else "wandb sync reported nothing"
    text = re.sub(r"^(ERROR|Error:?)\s*", "", text).rstrip(". ")
    return text if len(text) <= 300 else text[:297] + "..."
