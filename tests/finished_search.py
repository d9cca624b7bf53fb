"""One real search shared by test_report, test_tracking and test_progress (run once per session).

4 trials x 3 epochs on a small synthetic set, ASHA with grace period 1 and reduction factor 2,
W&B offline (real wandb, no network), a made-up W&B API key in the environment that must never be
written anywhere, and progress printed to a pipe as in a SLURM job log. While it runs, `hpctune
report` and `hpctune list` are run against it once, so the "still running" case is covered by
the same search.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from conftest import HPCTUNE, REPO, SHARED, run_cli

FAKE_KEY = "f4k3f4k3f4k3f4k3f4k3f4k3f4k3f4k3f4k3f4k3"  # 40 characters, like a W&B API key
SPACE = "lr0: {loguniform: [0.005, 0.2]}\nmomentum: {uniform: [0.8, 0.98]}\n"
TRAIN_ARGS = ["epochs=3", "imgsz=64", "batch=16", "nbs=16", "warmup_epochs=0", "close_mosaic=0",
              "optimizer=SGD", "workers=0"]
TRIALS = 4


@dataclass
class Search:
    storage: Path
    run_dir: Path
    tune: subprocess.CompletedProcess
    report_while_running: subprocess.CompletedProcess
    report_while_running_dir: Path
    list_while_running: subprocess.CompletedProcess
    env: dict[str, str]
    seconds: float


def closed_port() -> int:
    """A loopback port nothing listens on (connections to it are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def search_env() -> dict[str, str]:
    return {
        "WANDB_API_KEY": FAKE_KEY,
        "WANDB_BASE_URL": f"http://127.0.0.1:{closed_port()}",
        "HPCTUNE_PROGRESS_INTERVAL": "5",
        "PYTHONUNBUFFERED": "1",
    }


@functools.cache
def finished_search() -> Search:
    from hpctune.yolo.demo import make_demo_dataset

    data = make_demo_dataset(SHARED / "data" / "report", n_train=128, n_val=32, imgsz=64, seed=0)
    root = SHARED / "tests" / "finished-search"
    shutil.rmtree(root, ignore_errors=True)
    storage = root / "runs"
    storage.mkdir(parents=True)
    (root / "space.yaml").write_text(SPACE)
    env = search_env()
    args = [*HPCTUNE, "tune", f"data={data}", *TRAIN_ARGS, "--space", str(root / "space.yaml"),
            "--grace-period", "1", "--reduction-factor", "2", "--max-samples", str(TRIALS),
            "--storage", str(storage), "--name", "search", "--wandb", "--wandb-mode", "offline",
            "--wandb-project", "hpctune-tests"]
    run_dir = storage / "search"
    started = time.monotonic()
    stdout, stderr = open(root / "stdout.txt", "w+"), open(root / "stderr.txt", "w+")
    process = subprocess.Popen(args, cwd=REPO, env={**os.environ, **env}, stdout=stdout, stderr=stderr,
                               stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not any(p.stat().st_size for p in run_dir.glob("trials/*/epochs.jsonl")):
            assert process.poll() is None, f"search ended before its first epoch:\n{_tail(stderr)}"
            assert time.monotonic() < deadline, "no epoch finished within 300 s"
            time.sleep(0.5)
        running_dir = root / "report-while-running"
        report = run_cli("report", str(run_dir), "--output", str(running_dir), timeout=120)
        listing = run_cli("list", str(storage), timeout=120)
        process.wait(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stdout.seek(0)
    stderr.seek(0)
    tune = subprocess.CompletedProcess(args, process.returncode, stdout.read(), stderr.read())
    stdout.close()
    stderr.close()
    assert tune.returncode == 0, f"search failed:\n{tune.stdout[-3000:]}\n{tune.stderr[-3000:]}"
    return Search(storage=storage, run_dir=run_dir, tune=tune, report_while_running=report,
                  report_while_running_dir=running_dir, list_while_running=listing, env=env,
                  seconds=time.monotonic() - started)


def _tail(file) -> str:
    file.flush()
    file.seek(0)
    return file.read()[-3000:]
