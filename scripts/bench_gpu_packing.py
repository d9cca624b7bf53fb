#!/usr/bin/env python
"""GPU packing benchmark: trials per hour of a real hpctune search at gpu_per_trial 1, 0.5 and 0.25.

On a machine with one NVIDIA GPU (no internet needed), from the repository root:

    python3 scripts/bench_gpu_packing.py --out $OUT/gpu_packing.json

It needs importable there: ray (with tune), ultralytics, submitit and polars (Ultralytics reads its
results.csv with polars after every epoch), besides torch, torchvision, opencv, pandas, pyarrow and
the rest of a usual PyTorch image; where one is missing it says so in one line and exits with 2.
Their wheels for Python 3.12 (the versions in .venv) are too large to carry as they are under a
64 MiB limit: ray 2.60.0 79.3 MB (31 MB of it Java jars), polars-runtime-32 2.1.0 53.9 MB, polars
0.9 MB, ultralytics 8.4.190 1.4 MB, the rest (ultralytics-thop, submitit, tensorboardX, jsonschema,
jsonschema-specifications, referencing, rpds-py) 0.7 MB: 136 MB. scripts/gpu_packing_bundle.sh
(run where pip reaches PyPI) unpacks them, drops ray's jars and source maps, strips debug symbols
and packs one xz archive, 57 MiB (59.7 MB); the repository's own files add ~0.6 MB. On a device
machine reached through a tool that carries ignored paths:

    carry:   .test-shared/gpu-bundle/site-3.12.tar.xz
    command: mkdir -p /tmp/site && tar -xJf .test-shared/gpu-bundle/site-3.12.tar.xz -C /tmp/site &&
             PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 python3 scripts/bench_gpu_packing.py --out $OUT/gpu_packing.json

At the defaults, expect about 5-7 minutes on an H200 with 16 cores (a guess: not measured yet);
`--n-train 256` or `--trials 4` shortens it. Figures are written after each packing.

Defaults: yolov8n built from "yolov8n.yaml" (nothing downloaded), imgsz 640, batch 16, generated
shapes data (hpctune.yolo.demo.make_demo_dataset: 512 train / 64 val images), 8 trials x 2 epochs,
seed 0, random search (the same configurations at every packing, the first one the baseline), ASHA
grace period = epochs (no trial is stopped: every packing does the same work),
cpus_per_trial = CPUs / trials per GPU. The packings run one after the other in this process, each
a complete hpctune.tune() (its own Ray instance); the figures are written after each one, so a run
cut short keeps what it measured.

Figures per packing:
  wall_s             the hpctune.tune() call: Ray's start, every trial, results, Ray's shutdown
  trials_per_hour    trials finished / wall hours; epochs_per_hour likewise with epochs trained
  ratio_vs_1         trials_per_hour / that of gpu_per_trial=1 in the same run (the target: >= 3)
  trial_memory_mib   peak GPU memory of each trial process (nvidia-smi --query-compute-apps, polled
                     every 0.5 s; the maximum per pid): mean and max over the trial processes (a
                     process Ray reuses for the next trial counts once)
  gpu                peak memory.used of the GPU(s) during the search, its value before it (idle),
                     mean and peak utilization.gpu
  mean_epoch_s       time between consecutive epoch reports of a trial (training + validation)

--smoke runs the same code on a machine without a GPU (the tests): Ray is given one fake GPU, the
trials train on the CPU (HPCTUNE_FORCE_CPU=1), at imgsz 64 with 16 images, 2 trials x 1 epoch,
packings 1 and 0.5; memory figures are null where nvidia-smi is absent.

    .venv/bin/python scripts/bench_gpu_packing.py --smoke --out /tmp/gpu_packing.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("HPCTUNE_TEST_SHARED", REPO / ".test-shared"))

REQUIRED = ("ray", "ultralytics", "submitit", "polars")
TARGET_RATIO = 3.0
POLL_S = 0.5
APPS_QUERY = ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
GPU_QUERY = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
INFO_QUERY = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"]

# The searched hyperparameters: the same configurations at every packing (the random searcher, whose
# suggestion n depends on the seed and n alone; the first one is the baseline, Ultralytics' defaults).
SPACE = {"lr0": {"loguniform": [1e-4, 1e-2]}, "momentum": {"uniform": [0.8, 0.95]}}
DEFAULTS = {"trials": 8, "epochs": 2, "n_train": 512, "n_val": 64, "imgsz": 640, "batch": 16,
            "packings": [1.0, 0.5, 0.25]}
SMOKE = {"trials": 2, "epochs": 1, "n_train": 16, "n_val": 8, "imgsz": 64, "batch": 16, "packings": [1.0, 0.5]}


# ---------------------------------------------------------------- pure figures

def missing_modules(names: Iterable[str], importer: Callable[[str], Any] = importlib.import_module) -> list[str]:
    """The modules among `names` that cannot be imported, with the reason: ['ray (No module named ...)']."""
    missing = []
    for name in names:
        try:
            importer(name)
        except Exception as exc:  # noqa: BLE001  (a broken install is as missing as an absent one)
            missing.append(f"{name} ({str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__})")
    return missing


def preflight_error(missing: list[str], cuda: bool, smoke: bool) -> str | None:
    """The one-line reason this benchmark cannot run here, or None."""
    if missing:
        return (f"bench_gpu_packing: cannot import {', '.join(missing)}: install them or put their wheels on "
                "PYTHONPATH (see the top of scripts/bench_gpu_packing.py)")
    if not cuda and not smoke:
        return ("bench_gpu_packing: no CUDA GPU visible to torch: run it on a machine with an NVIDIA GPU, "
                "or pass --smoke to exercise it on the CPU with a fake GPU")
    return None


def slots(gpus: int, gpu_per_trial: float) -> int:
    """Trials Ray runs at once on `gpus` GPUs at `gpu_per_trial` each."""
    return max(1, math.floor(gpus / gpu_per_trial + 1e-9))


def cpus_per_trial(cpus: int, gpus: int, gpu_per_trial: float) -> int:
    """The CPUs shared among the trials that run at once (at least one each)."""
    return max(1, cpus // slots(gpus, gpu_per_trial))


def per_hour(count: float, wall_s: float) -> float | None:
    """count / wall hours; None for a wall time that is not positive."""
    return count * 3600.0 / wall_s if wall_s > 0 else None


def ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None


def _numbers(line: str) -> list[float] | None:
    try:
        return [float(field) for field in line.split(",")]
    except ValueError:  # "[N/A]", "[Not Supported]", an error message
        return None


def parse_compute_apps(text: str) -> list[tuple[int, float]]:
    """`nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits` -> [(pid, MiB)];
    lines that are not two numbers are skipped."""
    apps = []
    for line in text.splitlines():
        values = _numbers(line)
        if values is not None and len(values) == 2:
            apps.append((int(values[0]), values[1]))
    return apps


def parse_gpu_query(text: str) -> list[tuple[float | None, float | None]]:
    """`nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits` -> one
    (utilization %, memory used MiB) per GPU; a field nvidia-smi cannot read is None."""
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 2:
            continue
        values: list[float | None] = []
        for field in fields:
            try:
                values.append(float(field))
            except ValueError:
                values.append(None)
        gpus.append((values[0], values[1]))
    return gpus


def peak_per_pid(samples: Iterable[list[tuple[int, float]]]) -> dict[int, float]:
    """The largest memory each process used over the polls (a process on two GPUs: their sum)."""
    peaks: dict[int, float] = {}
    for apps in samples:
        now: dict[int, float] = {}
        for pid, mib in apps:
            now[pid] = now.get(pid, 0.0) + mib
        for pid, mib in now.items():
            peaks[pid] = max(peaks.get(pid, 0.0), mib)
    return peaks


def trial_memory(peaks: dict[int, float], trial_pids: Iterable[int], exclude: Iterable[int] = ()) -> dict[str, Any]:
    """Mean and max peak memory (MiB) over the trial processes. Where nvidia-smi shows none of the
    trials' pids (another pid namespace), every process it showed counts, less `exclude`, and
    `matched` says so. None figures where nothing was seen."""
    trial_pids, exclude = set(trial_pids), set(exclude)
    chosen = {pid: mib for pid, mib in peaks.items() if pid in trial_pids}
    matched = bool(chosen)
    if not matched:
        chosen = {pid: mib for pid, mib in peaks.items() if pid not in exclude}
    values = list(chosen.values())
    return {"mean": round(statistics.fmean(values), 1) if values else None,
            "max": round(max(values), 1) if values else None,
            "processes": len(values), "matched": matched,
            "per_pid": {str(pid): mib for pid, mib in sorted(chosen.items())}}


def gpu_summary(samples: list[list[tuple[float | None, float | None]]],
                idle: list[tuple[float | None, float | None]] | None = None) -> dict[str, Any]:
    """Peak total memory used (summed over GPUs per poll), mean and peak utilisation (mean over GPUs per
    poll), and the memory used before the search; None where nothing was read."""
    memory = [sum(m for _, m in gpus if m is not None) for gpus in samples if any(m is not None for _, m in gpus)]
    util = [statistics.fmean(u for u, _ in gpus if u is not None) for gpus in samples
            if any(u is not None for u, _ in gpus)]
    idle_memory = [m for _, m in idle or [] if m is not None]
    return {"peak_memory_used_mib": max(memory) if memory else None,
            "idle_memory_used_mib": sum(idle_memory) if idle_memory else None,
            "mean_utilization_pct": round(statistics.fmean(util), 1) if util else None,
            "peak_utilization_pct": max(util) if util else None,
            "polls": len(samples)}


def trial_records_summary(records: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """From each trial's epochs.jsonl: the processes that trained trials, the GPUs Ray assigned, and
    the mean time between two consecutive epoch reports of a trial (None with one epoch)."""
    pids, devices, gaps = set(), set(), []
    for history in records.values():
        epochs = sorted((r for r in history if not r.get("final")), key=lambda r: r["epoch"])
        for record in history:
            if record.get("pid") is not None:
                pids.add(int(record["pid"]))
            devices.add(record.get("cuda_visible_devices"))
        gaps += [b["time"] - a["time"] for a, b in zip(epochs, epochs[1:], strict=False)
                 if b["epoch"] == a["epoch"] + 1]
    return {"pids": sorted(pids), "cuda_visible_devices": sorted(str(d) for d in devices),
            "mean_epoch_s": round(statistics.fmean(gaps), 2) if gaps else None}


def packing_row(*, gpu_per_trial: float, gpus: int, cpus: int, wall_s: float, table: list[dict[str, Any]],
                epochs: int, trials: int) -> dict[str, Any]:
    """The throughput figures of one packing from hpctune's result table (one row per trial)."""
    finished = sum(1 for row in table if row.get("state") == "completed" and row.get("epochs") == epochs)
    trained = sum(int(row.get("epochs") or 0) for row in table)
    tph = per_hour(finished, wall_s)
    return {"gpu_per_trial": gpu_per_trial, "concurrent_trials": slots(gpus, gpu_per_trial),
            "cpus_per_trial": cpus_per_trial(cpus, gpus, gpu_per_trial), "trials_asked": trials,
            "trials_finished": finished, "epochs_trained": trained, "wall_s": round(wall_s, 2),
            "trials_per_hour": round(tph, 2) if tph is not None else None,
            "epochs_per_hour": round(per_hour(trained, wall_s), 2) if wall_s > 0 else None}


def add_ratios(rows: list[dict[str, Any]], target: float = TARGET_RATIO) -> None:
    """ratio_vs_1: trials per hour against the gpu_per_trial=1 row of the same run (None without one)."""
    base = next((r["trials_per_hour"] for r in rows if r.get("gpu_per_trial") == 1.0 and not r.get("error")), None)
    for row in rows:
        value = ratio(row.get("trials_per_hour"), base)
        row["ratio_vs_1"] = round(value, 3) if value is not None else None
        row["meets_target"] = None if value is None or row["gpu_per_trial"] == 1.0 else value >= target


def format_table(rows: list[dict[str, Any]]) -> str:
    """The figures as a short text table."""
    def fmt(value: Any, spec: str = ".1f") -> str:
        return "-" if value is None else format(value, spec)

    lines = [f"{'gpu/trial':>9} {'at once':>7} {'cpus':>4} {'done':>7} {'wall s':>8} {'trials/h':>9} "
             f"{'epochs/h':>9} {'x vs 1':>7} {'epoch s':>7} {'MiB/trial mean':>14} {'max':>7} "
             f"{'GPU MiB peak':>12} {'util %':>6}"]
    for r in rows:
        if r.get("error"):
            lines.append(f"{r['gpu_per_trial']:>9g} failed: {r['error']}")
            continue
        mem, gpu = r.get("trial_memory_mib") or {}, r.get("gpu") or {}
        lines.append(
            f"{r['gpu_per_trial']:>9g} {r['concurrent_trials']:>7d} {r['cpus_per_trial']:>4d} "
            f"{r['trials_finished']:>3d}/{r['trials_asked']:<3d} {fmt(r['wall_s']):>8} {fmt(r['trials_per_hour']):>9} "
            f"{fmt(r['epochs_per_hour']):>9} {fmt(r.get('ratio_vs_1'), '.2f'):>7} {fmt(r.get('mean_epoch_s')):>7} "
            f"{fmt(mem.get('mean'), '.0f'):>14} {fmt(mem.get('max'), '.0f'):>7} "
            f"{fmt(gpu.get('peak_memory_used_mib'), '.0f'):>12} {fmt(gpu.get('mean_utilization_pct')):>6}")
    return "\n".join(lines)


# ---------------------------------------------------------------- nvidia-smi polling

def _query(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


class GpuMonitor:
    """Polls nvidia-smi every POLL_S seconds in a background thread: compute apps and the GPUs' state."""

    def __init__(self):
        self.available = shutil.which("nvidia-smi") is not None
        self.apps: list[list[tuple[int, float]]] = []
        self.gpus: list[list[tuple[float | None, float | None]]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def snapshot(self) -> list[tuple[float | None, float | None]] | None:
        text = _query(GPU_QUERY) if self.available else None
        return parse_gpu_query(text) if text is not None else None

    def _poll(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            apps, gpus = _query(APPS_QUERY), _query(GPU_QUERY)
            if apps is not None:
                self.apps.append(parse_compute_apps(apps))
            if gpus is not None:
                self.gpus.append(parse_gpu_query(gpus))
            self._stop.wait(max(0.0, POLL_S - (time.monotonic() - started)))

    def __enter__(self) -> GpuMonitor:
        if self.available:
            self._thread = threading.Thread(target=self._poll, name="nvidia-smi-poll", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)


def gpu_info() -> dict[str, Any] | None:
    text = _query(INFO_QUERY) if shutil.which("nvidia-smi") else None
    if not text:
        return None
    gpus = []
    for line in text.strip().splitlines():
        name, total, driver = (f.strip() for f in line.split(",", 2))
        gpus.append({"name": name, "memory_total_mib": _numbers(total)[0] if _numbers(total) else None,
                     "driver": driver})
    return {"gpus": gpus}


# ---------------------------------------------------------------- the searches

def use_fake_gpu(cpus: int) -> None:
    """--smoke: hpctune declares to its private Ray the resources Resources.detect() finds (torch's
    GPU count outside SLURM) and has no setting for fake GPUs in a local run, so this process reports
    one GPU; the trials then train on the CPU (HPCTUNE_FORCE_CPU, which hpctune's tests use with the
    fake GPUs of the local Slurm cluster). Ray's processes inherit this environment."""
    from hpctune.run.spec import Resources
    from hpctune.yolo.trainer import FORCE_CPU

    os.environ[FORCE_CPU] = "1"
    Resources.detect = classmethod(lambda cls: cls(cpus=cpus, gpus=1))


def read_records(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    records = {}
    for folder in sorted((run_dir / "trials").glob("*")):
        file = folder / "epochs.jsonl"
        if file.exists():
            records[folder.name] = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
    return records


def run_packing(gpu_per_trial: float, *, settings: dict[str, Any], data: Path, storage: Path, cpus: int,
                gpus: int) -> dict[str, Any]:
    import hpctune

    name = f"packing-{gpu_per_trial:g}-{uuid.uuid4().hex[:6]}"  # a rerun on the same --storage is new
    cpt = cpus_per_trial(cpus, gpus, gpu_per_trial)
    monitor = GpuMonitor()
    idle = monitor.snapshot()
    print(f"--- gpu_per_trial {gpu_per_trial:g}: {slots(gpus, gpu_per_trial)} trial(s) at once, "
          f"{cpt} CPU(s) each", flush=True)
    started = time.monotonic()
    with monitor:
        result = hpctune.tune(
            model="yolov8n.yaml", data=str(data), space=SPACE, grace_period=settings["epochs"],
            gpu_per_trial=gpu_per_trial, max_samples=settings["trials"], epochs=settings["epochs"],
            seed=settings["seed"], name=name, storage=str(storage), cpus_per_trial=float(cpt), search_alg="random",
            train_args={"imgsz": settings["imgsz"], "batch": settings["batch"], "optimizer": "SGD"},
        )
    wall_s = time.monotonic() - started
    row = packing_row(gpu_per_trial=gpu_per_trial, gpus=gpus, cpus=cpus, wall_s=wall_s, table=result.table,
                      epochs=settings["epochs"], trials=settings["trials"])
    trials = trial_records_summary(read_records(Path(result.run_dir)))
    row.update(run_dir=str(result.run_dir), mean_epoch_s=trials["mean_epoch_s"],
               cuda_visible_devices=trials["cuda_visible_devices"], trial_pids=trials["pids"])
    if monitor.available:
        row["trial_memory_mib"] = trial_memory(peak_per_pid(monitor.apps), trials["pids"], exclude=[os.getpid()])
        row["gpu"] = gpu_summary(monitor.gpus, idle)
    else:
        row["trial_memory_mib"] = {"mean": None, "max": None, "processes": 0, "matched": False, "per_pid": {}}
        row["gpu"] = gpu_summary([], None)
    return row


def write_json(path: Path, figures: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(figures, indent=2))
    os.replace(tmp, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, help=f"trials per packing (default {DEFAULTS['trials']})")
    parser.add_argument("--epochs", type=int, help=f"epochs per trial (default {DEFAULTS['epochs']})")
    parser.add_argument("--n-train", type=int, help=f"generated training images (default {DEFAULTS['n_train']})")
    parser.add_argument("--n-val", type=int, help=f"generated validation images (default {DEFAULTS['n_val']})")
    parser.add_argument("--batch", type=int, help=f"batch size (default {DEFAULTS['batch']})")
    parser.add_argument("--imgsz", type=int, help=f"image size (default {DEFAULTS['imgsz']})")
    parser.add_argument("--packings", type=float, nargs="+",
                        help="gpu_per_trial values, in order (default 1 0.5 0.25; 1 gives the ratios' base)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--storage", type=Path,
                        help="folder for the data and run directories (default: a new temp dir under .test-shared)")
    parser.add_argument("--out", type=Path, help="the JSON figures (default: STORAGE/gpu_packing.json)")
    parser.add_argument("--smoke", action="store_true",
                        help="no GPU needed: one fake GPU, CPU training, tiny settings (for the tests)")
    args = parser.parse_args(argv)
    base = SMOKE if args.smoke else DEFAULTS
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    bad = [p for p in args.packings if not (0 < p <= 1)]
    if bad or args.trials < 1 or args.epochs < 1:
        parser.error("need 0 < packing <= 1, --trials >= 1 and --epochs >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    error = preflight_error(missing_modules(REQUIRED), False, True)
    cuda = False
    if error is None:
        import torch

        cuda = torch.cuda.is_available()
        error = preflight_error([], cuda, args.smoke)
    if error:
        print(error, file=sys.stderr)
        return 2

    from hpctune.run.spec import Resources
    from hpctune.yolo.demo import make_demo_dataset

    cpus = len(os.sched_getaffinity(0))
    # Ray's worker processes inherit this environment: they import hpctune from this checkout too.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    if args.smoke:
        use_fake_gpu(cpus)
    resources = Resources.detect()
    storage = args.storage or Path(tempfile.mkdtemp(prefix="bench-gpu-packing-", dir=_mkdir(SHARED)))
    storage = _mkdir(storage.resolve())
    out = args.out or storage / "gpu_packing.json"
    settings = {"model": "yolov8n.yaml", "imgsz": args.imgsz, "batch": args.batch, "n_train": args.n_train,
                "n_val": args.n_val, "trials": args.trials, "epochs": args.epochs, "seed": args.seed,
                "packings": args.packings, "space": SPACE, "search_alg": "random", "grace_period": args.epochs}
    figures: dict[str, Any] = {
        "benchmark": "gpu_packing", "smoke": args.smoke, "settings": settings,
        "machine": {"cpus": resources.cpus, "gpus": resources.gpus, "cuda": cuda, "nvidia_smi": gpu_info(),
                    "hostname": os.uname().nodename, "versions": _versions()},
        "storage": str(storage), "target_ratio": TARGET_RATIO, "rows": [],
    }
    started = time.monotonic()
    data = make_demo_dataset(storage / f"data-{args.imgsz}-{args.n_train}-{args.n_val}", n_train=args.n_train,
                             n_val=args.n_val, imgsz=args.imgsz, seed=0)
    figures["dataset_s"] = round(time.monotonic() - started, 1)
    print(f"data {data} ({figures['dataset_s']} s); figures -> {out}", flush=True)
    failed = False
    for packing in args.packings:
        try:
            row = run_packing(packing, settings=settings, data=data, storage=storage, cpus=resources.cpus,
                              gpus=resources.gpus)
        except Exception as exc:  # noqa: BLE001  (the next packings still run; the error is in the figures)
            failed = True
            row = {"gpu_per_trial": packing, "error": f"{exc.__class__.__name__}: {str(exc).splitlines()[0]}"
                   if str(exc) else exc.__class__.__name__}
        figures["rows"].append(row)
        add_ratios(figures["rows"])
        figures["total_s"] = round(time.monotonic() - started, 1)
        write_json(out, figures)
        print(format_table([row]).splitlines()[-1], flush=True)
    print()
    print(format_table(figures["rows"]))
    print(f"\ntarget: trials/hour >= {TARGET_RATIO:g}x that of gpu_per_trial=1; figures in {out}")
    return 1 if failed else 0


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _versions() -> dict[str, str]:
    import importlib.metadata

    versions = {}
    for package in ("torch", "ray", "ultralytics", "polars"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


if __name__ == "__main__":
    sys.exit(main())
