#!/usr/bin/env python
"""Scale benchmark: simulated searches (hpctune.testing.simulate) through the real engine driver, on fake GPUs.

    # on the local 3-node Slurm cluster (scripts/slurm-cluster-up.sh), 8 fake GPUs per node:
    .venv/bin/python scripts/bench_scale.py slurm --trials 1000          # ~20 min: baseline, then hpctune
    .venv/bin/python scripts/bench_scale.py save --trials 100 1000 5000   # experiment-state save vs trials
    .venv/bin/python scripts/bench_scale.py throughput --slots 24         # reports/s the driver takes
    .venv/bin/python scripts/bench_scale.py local --trials 200 --slots 8  # one machine, private Ray

Each command measures two variants in the same process or job: `baseline`, the settings before
hpctune.engine.scale (HPCTUNE_SCALE_PROFILE=baseline: an experiment snapshot after every driver step, no
actor reuse, Ray's own loggers, full trial state; and, patched in here, the live results table
rebuilt from Ray's experiment state at every trial's end and a TensorBoard fsync per result), and
`hpctune`, the current defaults. The Slurm job runs the baseline first, stopped after
--baseline-cap-s (it would take hours at 1000 trials), then hpctune to the end.

Figures (print_run):
  utilisation  busy slot-seconds / allocated slot-seconds. Busy = the epochs' sleeps (the `busy`
               interval in every epoch record). Allocated = slots x wall time over three windows:
               `steady` from the moment every slot has started its first trial until the last trial
               starts (work queued all along: idle slots are hpctune's or Ray's overhead); `with
               ramp-up` from fit() start (adds starting the trial processes); `whole run` to fit()'s
               end (adds ASHA's drain: the last promoted trials run alone).
  per report   the driver process's CPU per reported epoch (all its threads, less this probe's); the
               wait of a trial between two epochs (its report's round trip through the driver);
               the idle time of a slot between two trials; reports per second.
  snapshots    experiment snapshots taken, per report, and the time each took in the driver.
  storage      bytes written to the run directory (shared storage) per report: final sizes of the
               files that are only appended to, one checkpoint folder per report, and every rewrite
               of the run-level files (polled every 50 ms); files created per report.
A run cut short (a preempted Slurm job) is analysed up to the probe's last dump (every 5 s).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# Ray's worker processes inherit this environment: they import hpctune (the simulated trainer) from this checkout too.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
SHARED = Path(os.environ.get("HPCTUNE_TEST_SHARED", REPO / ".test-shared")) / "bench-scale"
ENV_FILE = Path("/var/lib/hpctune-test-slurm/env")
PY = sys.executable

# The settings before this benchmark's fixes, for the baseline runs (see hpctune.engine.scale).
BASELINE_ENV = {"HPCTUNE_SCALE_PROFILE": "baseline"}


# ---------------------------------------------------------------- instrumentation (driver process)

class Probe:
    """Times the driver's fit(), experiment snapshots and its CPU; polls run-level files for rewrites."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.fit_start = self.fit_end = None
        self.cpu_start = self.cpu_end = 0.0
        self.saves: list[float] = []  # seconds per TuneController.save_to_dir
        self.syncs: list[float] = []  # seconds per experiment checkpoint call that saved (save + upload launch)
        self.rewrites: dict[str, int] = {}  # run-level file -> bytes written by rewrites
        self._seen: dict[str, tuple] = {}
        self._stop = threading.Event()
        self.poll_cpu = 0.0  # the poller's own CPU seconds, not the driver's

    @property
    def file(self) -> Path:
        """Where the figures so far are dumped (beside the run directory, not in it): a run cut
        short (a preempted job) can still be analysed."""
        return self.run_dir.parent / f"{self.run_dir.name}.probe.json"

    def dump(self) -> None:
        state = {k: getattr(self, k) for k in ("fit_start", "fit_end", "cpu_start", "cpu_end", "saves", "syncs",
                                               "rewrites", "poll_cpu")}
        state.update(now=time.time(), cpu_now=self._cpu())
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.file)

    @classmethod
    def load(cls, run_dir: Path) -> Probe:
        probe = cls(run_dir)
        state = json.loads(probe.file.read_text())
        for key in ("fit_start", "fit_end", "cpu_start", "cpu_end", "saves", "syncs", "rewrites", "poll_cpu"):
            setattr(probe, key, state[key])
        if probe.fit_end is None:  # cut short: up to the last dump
            probe.fit_end, probe.cpu_end = state["now"], state["cpu_now"]
            probe.partial = True
        return probe

    partial = False

    @staticmethod
    def _cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def _poll(self) -> None:
        folders = [self.run_dir, self.run_dir / "tune"]
        dumped = time.monotonic()
        while not self._stop.is_set():
            started = time.thread_time()
            if self.fit_start is not None and time.monotonic() - dumped > 5:
                dumped = time.monotonic()
                self.dump()
            for folder in folders:
                try:
                    entries = list(os.scandir(folder))
                except OSError:
                    continue
                for entry in entries:
                    try:
                        if not entry.is_file(follow_symlinks=False):
                            continue
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    key = entry.path
                    state = (st.st_ino, st.st_mtime_ns, st.st_size)
                    old = self._seen.get(key)
                    if old != state:
                        grown = old is not None and old[0] == st.st_ino and st.st_size >= old[2]
                        appended = st.st_size - old[2] if grown and entry.name.endswith((".log", ".jsonl")) else None
                        self.rewrites[key] = self.rewrites.get(key, 0) + (appended if appended is not None
                                                                          else st.st_size)
                        self._seen[key] = state
            self.poll_cpu += time.thread_time() - started
            self._stop.wait(0.05)

    @contextmanager
    def running(self):
        from ray.tune import Tuner
        from ray.tune.execution import tune_controller
        from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

        patches = []

        def wrap(owner, name, wrapper):
            original = getattr(owner, name)
            patches.append((owner, name, original))
            setattr(owner, name, wrapper(original))

        probe = self

        def timed_fit(fit):
            def run(self_, *a, **k):
                probe.fit_start, probe.cpu_start = time.time(), probe._cpu()
                try:
                    return fit(self_, *a, **k)
                finally:
                    probe.fit_end, probe.cpu_end = time.time(), probe._cpu()
            return run

        def timed_save(save):
            def run(self_, *a, **k):
                t = time.perf_counter()
                try:
                    return save(self_, *a, **k)
                finally:
                    probe.saves.append(time.perf_counter() - t)
            return run

        def timed_sync(sync):
            def run(self_, save_fn, force=False, wait=False):
                before = len(probe.saves)
                t = time.perf_counter()
                try:
                    return sync(self_, save_fn, force=force, wait=wait)
                finally:
                    if len(probe.saves) > before:
                        probe.syncs.append(time.perf_counter() - t)
            return run

        wrap(Tuner, "fit", timed_fit)
        wrap(tune_controller.TuneController, "save_to_dir", timed_save)
        wrap(_ExperimentCheckpointManager, "sync_up_experiment_state", timed_sync)
        poller = threading.Thread(target=self._poll, daemon=True)
        poller.start()
        try:
            yield self
        finally:
            self._stop.set()
            poller.join()
            self.dump()
            for owner, name, original in reversed(patches):
                setattr(owner, name, original)


@contextmanager
def _nothing():
    yield


# ---------------------------------------------------------------- analysis of a finished run

def _records(run_dir: Path) -> dict[str, list[dict]]:
    found = {}
    for folder in (run_dir / "trials").iterdir():
        path = folder / "epochs.jsonl"
        if path.exists():
            found[folder.name] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return found


def _is_checkpoint(path: Path) -> bool:
    return any(part.startswith("checkpoint_") for part in path.parts)


def storage_bytes(run_dir: Path, probe: Probe, reports: int) -> dict[str, float]:
    """Bytes written to the run directory: see the module docstring."""
    rewritten = set(probe.rewrites)
    appended = checkpoint_bytes = checkpoint_files = files = 0
    checkpoint_dirs: set[Path] = set()
    for path in run_dir.rglob("*"):
        if not path.is_file() or str(path) in rewritten:
            continue
        size = path.stat().st_size
        if _is_checkpoint(path.relative_to(run_dir)):
            checkpoint_bytes += size
            checkpoint_files += 1
            checkpoint_dirs.add(path.parent)
            continue
        appended += size
        files += 1
    kept = max(1, len(checkpoint_dirs))
    per_checkpoint = (checkpoint_bytes / kept, checkpoint_files / kept)
    created = max(reports, len(checkpoint_dirs))
    total = appended + sum(probe.rewrites.values()) + created * per_checkpoint[0]
    return {
        "total": total, "appended": appended, "rewrites": sum(probe.rewrites.values()),
        "checkpoints": created * per_checkpoint[0], "checkpoint_bytes_each": per_checkpoint[0],
        "checkpoints_kept": len(checkpoint_dirs),
        "files_created": files + created * per_checkpoint[1] + len(probe.rewrites),
        "top_rewrites": sorted(((v, Path(k).name) for k, v in probe.rewrites.items()), reverse=True)[:4],
    }


def analyse(run_dir: Path, probe: Probe, slots: int) -> dict:
    records = _records(run_dir)
    busy: list[tuple[float, float]] = []
    gaps: list[float] = []
    first_start: dict[str, float] = {}
    epochs = finals = 0
    for trial, rs in records.items():
        intervals = sorted(tuple(r["busy"]) for r in rs if "busy" in r)
        busy += intervals
        epochs += len(intervals)
        finals += sum(1 for r in rs if r.get("final"))
        gaps += [b[0] - a[1] for a, b in zip(intervals, intervals[1:], strict=False)]
        if intervals:
            first_start[trial] = intervals[0][0]
    # Every epoch is one report, but a completed trial's last, which its final record reports instead.
    reports = epochs
    t0, t1 = probe.fit_start, probe.fit_end
    drain = max(first_start.values())  # the last trial began: no work queued from here on
    first_wave = sorted(first_start.values())[:slots]

    def used(lo: float, hi: float) -> float:
        return sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in busy)

    full = first_wave[-1] if len(first_wave) == slots else drain  # every slot has started its first trial
    steady = used(full, drain) / (slots * (drain - full)) if drain > full else float("nan")
    queued = used(t0, drain) / (slots * (drain - t0)) if drain > t0 else float("nan")
    whole = used(t0, t1) / (slots * (t1 - t0))
    busy_total = sum(b - a for a, b in busy)
    cpu = probe.cpu_end - probe.cpu_start - probe.poll_cpu
    return {
        "trials": len(records), "finished": finals, "epochs": epochs, "reports": reports,
        "slots": slots, "wall_s": t1 - t0, "drain_s": t1 - drain, "busy_slot_s": busy_total,
        "util_steady": steady, "util_queued": queued, "util_run": whole, "full_s": full - t0,
        "ideal_s": busy_total / slots,
        "ramp_s": statistics.fmean(t - t0 for t in first_wave),  # fit() start to a slot's first epoch
        "reports_per_s": reports / (t1 - t0),
        "reports_per_s_steady": (sum(1 for a, b in busy if full <= b <= drain) / (drain - full)
                                 if drain > full else float("nan")),
        "driver_cpu_s": cpu, "driver_cpu_ms_per_report": 1000 * cpu / max(1, reports),
        "gap_ms_mean": 1000 * statistics.fmean(gaps) if gaps else float("nan"),
        "gap_ms_p95": 1000 * sorted(gaps)[int(0.95 * (len(gaps) - 1))] if gaps else float("nan"),
        "start_gap_s_mean": _start_gap(records, slots),
        "snapshots": len(probe.saves), "save_ms_mean": 1000 * statistics.fmean(probe.saves) if probe.saves else 0,
        "save_ms_max": 1000 * max(probe.saves, default=0),
        "save_s_total": sum(probe.syncs),
        "storage": storage_bytes(run_dir, probe, reports),
    }


def _start_gap(records: dict[str, list[dict]], slots: int) -> float:
    """Mean idle time of a slot between one trial's last epoch and the next trial's first (per slot:
    sorted trial spans assigned greedily to slots in start order)."""
    spans = sorted((min(r["busy"][0] for r in rs if "busy" in r), max(r["busy"][1] for r in rs if "busy" in r))
                   for rs in records.values() if any("busy" in r for r in rs))
    free: list[float] = []
    gaps = []
    for start, end in spans:
        free.sort()
        if len(free) < slots:
            free.append(end)
            continue
        # the slot freed most recently before this start is the one it took (earliest free if none)
        candidates = [f for f in free if f <= start]
        slot = max(candidates) if candidates else free[0]
        gaps.append(max(0.0, start - slot))
        free.remove(slot)
        free.append(end)
    return statistics.fmean(gaps) if gaps else float("nan")


# ---------------------------------------------------------------- one simulated search

def _set_variant(variant: str) -> None:
    os.environ["HPCTUNE_PROGRESS"] = os.environ.get("BENCH_PROGRESS", "plain")  # as in a job log
    if variant == "baseline":
        os.environ.update(BASELINE_ENV)
    else:
        for key in BASELINE_ENV:
            os.environ.pop(key, None)


@contextmanager
def legacy_tracking():
    """The baseline's live results table and TensorBoard writes, as they were before (tracking.py):
    results.csv rebuilt from Ray's experiment state (ExperimentAnalysis) every 30 s and at every
    trial's end, and an fsync'ed TensorBoard flush per result."""
    from hpctune.engine import tracking
    from hpctune.run.results import _write_csv, trial_rows
    from hpctune.run.rundir import RunDir

    table, board = tracking.ResultsTableCallback, tracking.TensorBoardCallback
    saved = (table._write, board._result)

    def write(self, trials, gap_s):
        forced = gap_s < self.interval_s  # a trial ended
        if not forced and time.monotonic() - self._written < self.interval_s:
            return
        self._written = time.monotonic()
        rundir = RunDir(self.run_dir)
        if rundir.has_experiment_state():
            _write_csv(rundir.results_csv, trial_rows(rundir, self.spec))  # no trials: ExperimentAnalysis

    def result(self, trial, result):
        saved[1](self, trial, result)
        self._writer(trial).flush()

    table._write, board._result = write, result
    try:
        yield
    finally:
        table._write, board._result = saved


def run_variant(variant: str, *, trials: int, slots: int, epochs: int, grace: int, epoch_s: float,
                seed: int, address: str | None, storage: Path, analyse_run: bool = True,
                on_created=None) -> dict:
    """One simulated search in this process; `variant` baseline or hpctune."""
    _set_variant(variant)
    from hpctune.engine import driver as search
    from hpctune.testing import simulate

    name = f"{variant}-{trials}t-{uuid.uuid4().hex[:6]}"
    rundir = simulate.create_run(name=name, storage=storage, trials=trials, epochs=epochs, grace_period=grace,
                                 seed=seed, epoch_s=epoch_s, gpus_per_node=slots)
    if on_created is not None:
        on_created(rundir.path)
    probe = Probe(rundir.path)
    profile = os.environ.get("BENCH_PROFILE")  # a file: cProfile of the driver's main thread
    legacy = legacy_tracking() if variant == "baseline" else _nothing()
    with probe.running(), legacy:
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            result = profiler.runcall(search.run, rundir.path, address=address)
            profiler.dump_stats(profile)
        else:
            result = search.run(rundir.path, address=address)
    if not analyse_run:
        return {"run_dir": str(rundir.path), "all_done": result.finished}
    figures = analyse(rundir.path, probe, slots)
    figures.update(variant=variant, run_dir=str(rundir.path), all_done=result.finished,
                   states=dict(sorted({r["state"]: sum(x["state"] == r["state"] for x in result.table)
                                       for r in result.table}.items())))
    return figures


def print_run(f: dict) -> None:
    s = f["storage"]
    print(f"  {f['variant']:<8} trials {f['trials']} ({f['states']}), {f['reports']} reports, {f['slots']} slots")
    print(f"    wall {f['wall_s']:.1f} s (ideal {f['ideal_s']:.1f} s; ramp-up: all slots busy after "
          f"{f['full_s']:.1f} s, {f['ramp_s']:.1f} s per slot; drain {f['drain_s']:.1f} s)")
    print(f"    utilisation: steady {100 * f['util_steady']:.1f} % (all slots started, work queued), "
          f"with ramp-up {100 * f['util_queued']:.1f} %, whole run {100 * f['util_run']:.1f} %")
    print(f"    driver CPU {f['driver_cpu_ms_per_report']:.1f} ms/report; trial gap between epochs "
          f"{f['gap_ms_mean']:.0f} ms mean, {f['gap_ms_p95']:.0f} ms p95; slot gap between trials "
          f"{f['start_gap_s_mean']:.2f} s; {f['reports_per_s']:.1f} reports/s")
    print(f"    snapshots {f['snapshots']} ({f['snapshots'] / max(1, f['reports']):.2f}/report), "
          f"{f['save_ms_mean']:.0f} ms mean, {f['save_ms_max']:.0f} ms max, {f['save_s_total']:.1f} s in all")
    per = max(1, f["reports"])
    print(f"    storage {s['total'] / per / 1024:.1f} KiB/report (appended {s['appended'] / per / 1024:.1f}, "
          f"rewrites {s['rewrites'] / per / 1024:.1f}, checkpoints {s['checkpoints'] / per / 1024:.2f}); "
          f"{s['files_created'] / per:.1f} files created/report; {s['checkpoints_kept']} checkpoint folders kept")
    print(f"    most rewritten: {', '.join(f'{n} {v / 1e6:.1f} MB' for v, n in s['top_rewrites'])}")


def compare(runs: list[dict]) -> None:
    base = next((r for r in runs if r["variant"] == "baseline"), None)
    new = next((r for r in runs if r["variant"] == "hpctune"), None)
    if not base or not new:
        return
    def ratio(key, sub=None):
        a = base[key] if sub is None else base[sub][key]
        b = new[key] if sub is None else new[sub][key]
        return b / a if a else float("nan")
    snaps = (new["snapshots"] / new["reports"]) / max(1e-9, base["snapshots"] / base["reports"])
    written = (new["storage"]["total"] / new["reports"]) / (base["storage"]["total"] / base["reports"])
    print(f"  hpctune/baseline: wall x{ratio('wall_s'):.2f}, steady utilisation x{ratio('util_steady'):.3f}, "
          f"driver CPU/report x{ratio('driver_cpu_ms_per_report'):.2f}, epoch gap x{ratio('gap_ms_mean'):.2f}, "
          f"snapshots/report x{snaps:.3f}, bytes/report x{written:.3f}")


# ---------------------------------------------------------------- experiment-state save vs trials

class _Measured(BaseException):  # noqa: N818  (not an error: Ray must not catch it)
    """Raised once the save figures are taken: the rest of fit() has nothing to measure."""


def clone_run(source: Path, target: Path, trials: int) -> None:
    """A run directory whose experiment state holds `trials` finished trials, cloned from the
    trial states of a small real run `source` (new trial ids, same content)."""
    import glob

    from hpctune.run.rundir import read_jsonl

    shutil.rmtree(target, ignore_errors=True)
    (target / "tune").mkdir(parents=True)
    manifest = json.loads((source / "manifest.json").read_text())
    manifest["spec"]["max_samples"] = trials
    manifest["spec"]["name"] = target.name
    manifest["spec"]["storage"] = str(target.parent)
    (target / "manifest.json").write_text(json.dumps(manifest))
    for path in (source / "tune").iterdir():
        if path.is_file() and not path.name.startswith("experiment_state"):
            shutil.copy(path, target / "tune" / path.name)
    state_path = sorted(glob.glob(str(source / "tune" / "experiment_state-*.json")))[-1]
    state = json.loads(Path(state_path).read_text())
    sources = state["trial_data"]
    ids = [json.loads(t)["trial_id"] for t, _ in sources]
    prefix = ids[0].rsplit("_", 1)[0] + "_"
    data = []
    for i in range(trials):
        t, m = sources[i % len(sources)]
        old, new = ids[i % len(sources)], f"{prefix}{i:05d}"
        trial = json.loads(t.replace(old, new))
        trial["status"] = "TERMINATED"
        data.append([json.dumps(trial, indent=2), m.replace(old, new)])
    state["trial_data"] = data
    src = source.name
    text = json.dumps(state).replace(src, target.name)
    Path(target / "tune" / Path(state_path).name).write_text(text)
    # The suggestion journal to match: trial i has the configuration of source trial i % len(sources).
    suggested = {e["trial_id"]: e for e in read_jsonl(source / "suggestions.jsonl")}
    with open(target / "suggestions.jsonl", "w") as f:
        for i in range(trials):
            entry = suggested.get(ids[i % len(sources)])
            if entry is not None:
                f.write(json.dumps({**entry, "trial_id": f"{prefix}{i:05d}", "n": i,
                                    "baseline": bool(entry.get("baseline")) and i == 0}) + "\n")
    if (source / "env").is_dir():
        shutil.copytree(source / "env", target / "env")


def _session_bytes(staging: Path) -> int:
    """Bytes of one snapshot: the newest session's state files and the rest, less the files of the
    session the run was restored from (Ray keeps copying those too: see README, Scaling)."""
    from hpctune.engine.scale import _STATE_FILE

    files = [p for p in staging.iterdir() if p.is_file()]
    sessions = {m.group(2) for p in files if (m := _STATE_FILE.match(p.name))}
    newest = max(sessions, default="")
    return sum(p.stat().st_size for p in files
               if not ((m := _STATE_FILE.match(p.name)) and m.group(2) != newest))


def measure_save(run_dir: Path, dirty: int = 24, repeats: int = 3) -> dict:
    """Restore the run through search._tuner (hpctune's real Tuner) and time Ray's experiment save:
    the full one fit() makes at the end (all trials serialised, upload waited for), then `repeats`
    steady-state saves with `dirty` trials changed since the last one."""
    from ray.tune.execution import tune_controller

    from hpctune.engine import driver as search
    from hpctune.engine import trainers
    from hpctune.run.rundir import RunDir
    from hpctune.run.spec import RunSpec

    rundir = RunDir(run_dir)
    manifest = rundir.read_manifest()
    spec = RunSpec.from_dict(manifest["spec"])
    figures: dict = {}
    original = tune_controller.TuneController.checkpoint

    def checkpoint(self, force=False, wait=False):
        if not force:
            return original(self, force=force, wait=wait)
        t = time.perf_counter()
        original(self, force=True, wait=True)
        figures["full_s"] = time.perf_counter() - t
        trials = self.get_trials()
        saves, uploads = [], []
        for r in range(repeats):
            for trial in trials[r * dirty:(r + 1) * dirty]:
                # a running trial: a new result for every value it reports (Ray's own bookkeeping)
                trial.update_last_result(dict(trial.last_result))
                trial.invalidate_json_state()
                self._mark_trial_to_checkpoint(trial)
            t = time.perf_counter()
            self.save_to_dir()
            saves.append(time.perf_counter() - t)
            t = time.perf_counter()
            self._storage.syncer.sync_up(self._storage.experiment_driver_staging_path,
                                         self._storage.experiment_fs_path)
            self._storage.syncer.wait()
            uploads.append(time.perf_counter() - t)
        figures["save_s"] = statistics.median(saves)
        figures["upload_s"] = statistics.median(uploads)
        figures["bytes"] = _session_bytes(Path(self._storage.experiment_driver_staging_path))
        raise _Measured

    tune_controller.TuneController.checkpoint = checkpoint
    t = time.perf_counter()
    try:
        search._tuner(rundir, spec, trainers.load(spec.trainer), session=1).fit()
    except _Measured:
        pass
    finally:
        tune_controller.TuneController.checkpoint = original
    figures["restore_and_save_s"] = time.perf_counter() - t
    return figures


def cmd_save(args) -> list[dict]:
    """Experiment-state save time vs number of trials, per variant: real Ray save of hpctune's Tuner."""
    import logging

    import ray

    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.CRITICAL)  # clones have no logs
    out = []
    for variant in args.variants:
        _set_variant(variant)
        src = run_variant(variant, trials=16, slots=4, epochs=9, grace=1, epoch_s=0.2, seed=args.seed,
                          address=None, storage=SHARED / "save", analyse_run=False)
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
        try:
            for n in args.trials:
                target = SHARED / "save" / f"{variant}-clone-{n}"
                clone_run(Path(src["run_dir"]), target, n)
                f = measure_save(target)
                f.update(variant=variant, trials=n)
                print(f"  {variant:<8} {n:>5} trials: save {1000 * f['save_s']:.0f} ms + upload "
                      f"{1000 * f['upload_s']:.0f} ms (steady, {f['bytes'] / 1e6:.1f} MB); first full save "
                      f"{1000 * f['full_s']:.0f} ms; restore+save {f['restore_and_save_s']:.1f} s", flush=True)
                out.append(f)
                if not args.keep:
                    shutil.rmtree(target, ignore_errors=True)
        finally:
            ray.shutdown()
        if not args.keep:
            shutil.rmtree(src["run_dir"], ignore_errors=True)
    return out


# ---------------------------------------------------------------- commands

def cmd_local(args) -> list[dict]:
    """Both variants on a private local Ray (ray.init with fake GPUs): the driver, not multi-node."""
    runs = []
    for variant in args.variants:
        f = run_variant(variant, trials=args.trials, slots=args.slots, epochs=args.epochs, grace=args.grace,
                        epoch_s=args.epoch_s, seed=args.seed, address=None, storage=SHARED / "local")
        print_run(f)
        runs.append(f)
        _cleanup(f, args)
    compare(runs)
    return runs


def cmd_throughput(args) -> list[dict]:
    """Reports per second the driver takes when trials report as fast as they can (epochs of
    `--epoch-s`, default 0.02 s): on this machine the trials' own CPU competes with the driver,
    so the driver's CPU per report gives its capacity alone (1000 / ms per report)."""
    runs = []
    for variant in args.variants:
        f = run_variant(variant, trials=args.trials, slots=args.slots, epochs=args.epochs, grace=args.grace,
                        epoch_s=args.epoch_s, seed=args.seed, address=None, storage=SHARED / "throughput")
        f["variant"] = variant
        print_run(f)
        print(f"    throughput {f['reports_per_s_steady']:.1f} reports/s with every slot busy "
              f"({f['reports_per_s']:.1f} over the whole run); driver alone "
              f"~{1000 / max(1e-9, f['driver_cpu_ms_per_report']):.0f} reports/s "
              f"({f['driver_cpu_ms_per_report']:.1f} ms CPU each)", flush=True)
        runs.append(f)
        _cleanup(f, args)
    return runs


JOB = """#!/bin/bash
export PYTHONPATH={repo} HPCTUNE_TEST_SHARED={shared}
srun --ntasks-per-node=1 {py} {script} job {job_args}
"""


def cluster_env() -> dict[str, str]:
    import re

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RAY_"))}
    for line in ENV_FILE.read_text().splitlines():
        m = re.match(r"\s*export\s+(\w+)=(.*)$", line)
        if m:
            env[m.group(1)] = m.group(2).strip().strip('"')
    return env


def cmd_slurm(args) -> list[dict]:
    """Submit `job` as one task per node on the local Slurm cluster; print its figures."""
    import subprocess

    if not ENV_FILE.exists():
        raise SystemExit(f"no local Slurm cluster ({ENV_FILE} missing): run scripts/slurm-cluster-up.sh")
    work = SHARED / "slurm" / f"job-{uuid.uuid4().hex[:6]}"
    work.mkdir(parents=True)
    out = work / "figures.json"
    job_args = [f"--out={out}", f"--trials={args.trials}", f"--gpus-per-node={args.gpus_per_node}",
                f"--epochs={args.epochs}", f"--grace={args.grace}", f"--epoch-s={args.epoch_s}",
                f"--seed={args.seed}", f"--baseline-cap-s={args.baseline_cap_s}",
                f"--variants={','.join(args.variants)}", *(["--keep"] if args.keep else [])]
    script = JOB.format(repo=REPO, shared=SHARED.parent, py=PY, script=Path(__file__).resolve(),
                        job_args=" ".join(job_args))
    (work / "job.sh").write_text(script)
    # One CPU and a little memory per node from Slurm: the trials sleep, and others may share the nodes.
    cmd = ["sbatch", "--parsable", f"-N{args.nodes}", "--ntasks-per-node=1", "--cpus-per-task=1",
           "--mem=1500M", "--no-requeue", "-t", str(args.time_min), f"--chdir={REPO}", f"--output={work}/out.txt",
           "--job-name=bench-scale", str(work / "job.sh")]
    env = cluster_env()
    job = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.strip()
    print(f"job {job}: {work}", flush=True)
    try:
        while subprocess.run(["squeue", "-h", "-j", job], env=env, capture_output=True, text=True).stdout.strip():
            time.sleep(2)
    except BaseException:
        subprocess.run(["scancel", job], env=env)
        raise
    runs = json.loads(out.read_text()) if out.exists() else []
    done = {f["run_dir"] for f in runs}
    started = work / "runs.jsonl"
    for line in started.read_text().splitlines() if started.exists() else []:
        run = json.loads(line)
        if run["run_dir"] in done or not Probe(Path(run["run_dir"])).file.exists():
            continue
        # cut short (preempted): figures up to the probe's last dump
        f = analyse(Path(run["run_dir"]), Probe.load(Path(run["run_dir"])), run["slots"])
        f.update(variant=run["variant"], run_dir=run["run_dir"], states={"cut short": True})
        runs.append(f)
    if not runs:
        raise SystemExit(f"job {job} wrote no figures:\n{(work / 'out.txt').read_text(errors='replace')[-3000:]}")
    for f in runs:
        print_run(f)
    compare(runs)
    (work / "figures-all.json").write_text(json.dumps(runs, default=str))
    return runs


def cmd_job(args) -> None:
    """Inside the Slurm job, on every node: a Ray cluster with fake GPUs; rank 0 runs the variants."""
    import dataclasses
    import signal

    from hpctune.raycluster.cluster import ray_cluster
    from hpctune.slurm.allocation import Allocation

    alloc = Allocation.from_env()
    # Fake GPUs, one CPU each for Ray (the trials sleep): what Slurm granted is not what Ray declares.
    alloc = dataclasses.replace(alloc, gpus=args.gpus_per_node, cpus=args.gpus_per_node)
    storage = SHARED / "slurm"
    with ray_cluster(alloc, storage / "cluster", timeout_s=300) as cluster:
        if not cluster.is_head:
            return
        runs = []
        started = Path(args.out).with_name("runs.jsonl")  # for figures of runs a preemption cuts short
        for variant in args.variants.split(","):
            def created(path, variant=variant):
                with open(started, "a") as f:
                    f.write(json.dumps({"variant": variant, "run_dir": str(path),
                                        "slots": alloc.num_nodes * args.gpus_per_node}) + "\n")

            timer = None
            if variant == "baseline" and args.baseline_cap_s:
                # Ray Tune stops on SIGINT, saves, and fit() returns: the baseline is measured over its window.
                timer = threading.Timer(args.baseline_cap_s, lambda: os.kill(os.getpid(), signal.SIGINT))
                timer.start()
            try:
                f = run_variant(variant, trials=args.trials, slots=alloc.num_nodes * args.gpus_per_node,
                                epochs=args.epochs, grace=args.grace, epoch_s=args.epoch_s, seed=args.seed,
                                address=cluster.address, storage=storage, on_created=created)
            finally:
                if timer is not None:
                    timer.cancel()
            f["capped_s"] = args.baseline_cap_s if variant == "baseline" else None
            f["nodes"] = sorted({n for n in _nodes(Path(f["run_dir"]))})
            print_run(f)
            runs.append(f)
            Path(args.out).write_text(json.dumps(runs, default=str))
            _cleanup(f, args)


def _nodes(run_dir: Path) -> set[str]:
    try:
        return {r.get("node", "") for rs in _records(run_dir).values() for r in rs}
    except OSError:
        return set()


def _cleanup(f: dict, args) -> None:
    if not args.keep:
        shutil.rmtree(f["run_dir"], ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    local = sub.add_parser("local")
    save = sub.add_parser("save")
    save.add_argument("--trials", type=int, nargs="+", default=[100, 1000, 5000])
    save.add_argument("--seed", type=int, default=0)
    save.add_argument("--variants", nargs="+", default=["baseline", "hpctune"])
    save.add_argument("--keep", action="store_true")
    for p in (local,):
        p.add_argument("--trials", type=int, default=200)
        p.add_argument("--slots", type=int, default=8)
        p.add_argument("--epochs", type=int, default=27)
        p.add_argument("--grace", type=int, default=3)
        p.add_argument("--epoch-s", type=float, default=2.0)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--variants", nargs="+", default=["baseline", "hpctune"])
        p.add_argument("--keep", action="store_true", help="keep the run directories")
    tp = sub.add_parser("throughput")
    tp.add_argument("--trials", type=int, default=200)
    tp.add_argument("--slots", type=int, default=24)
    tp.add_argument("--epochs", type=int, default=9)
    tp.add_argument("--grace", type=int, default=1)
    tp.add_argument("--epoch-s", type=float, default=0.02)
    tp.add_argument("--seed", type=int, default=0)
    tp.add_argument("--variants", nargs="+", default=["baseline", "hpctune"])
    tp.add_argument("--keep", action="store_true")
    for name in ("slurm", "job"):
        p = sub.add_parser(name)
        p.add_argument("--trials", type=int, default=1000)
        p.add_argument("--gpus-per-node", type=int, default=8)
        p.add_argument("--epochs", type=int, default=27)
        p.add_argument("--grace", type=int, default=3)
        p.add_argument("--epoch-s", type=float, default=2.0)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--baseline-cap-s", type=float, default=240.0,
                       help="stop the baseline run after this many seconds (0: let it finish)")
        p.add_argument("--keep", action="store_true")
        if name == "slurm":
            p.add_argument("--nodes", type=int, default=3)
            p.add_argument("--time-min", type=int, default=60)
            p.add_argument("--variants", nargs="+", default=["baseline", "hpctune"])
        else:
            p.add_argument("--out", required=True)
            p.add_argument("--variants", default="baseline,hpctune")
    args = parser.parse_args(argv)
    if args.command == "local":
        runs = cmd_local(args)
        print(json.dumps(runs, default=str))
    elif args.command == "save":
        print(json.dumps(cmd_save(args), default=str))
    elif args.command == "throughput":
        print(json.dumps(cmd_throughput(args), default=str))
    elif args.command == "slurm":
        cmd_slurm(args)
    elif args.command == "job":
        cmd_job(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
