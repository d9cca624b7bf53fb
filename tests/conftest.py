"""Shared fixtures. Folders that Slurm nodes must see live under the repository's .test-shared/
(on the local test cluster /tmp is node-local, as on real clusters)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hpctune.yolo.demo import DEMO_SPACE, DEMO_TRAIN_ARGS

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HPCTUNE_TEST_SHARED", REPO / ".test-shared"))
HPCTUNE = [sys.executable, "-m", "hpctune"]


@pytest.fixture
def shared_tmp(request) -> Path:
    """A fresh folder on shared storage, named after the test."""
    path = SHARED / "tests" / request.node.name.replace("[", "-").replace("]", "")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture(scope="session")
def tiny_data() -> Path:
    """A small synthetic detection dataset (reused across tests and sessions)."""
    from hpctune.yolo.demo import make_demo_dataset

    return make_demo_dataset(SHARED / "data" / "tiny", n_train=64, n_val=32, imgsz=64, seed=0)


def wait_for(condition, timeout: float, what: str, poll: float = 0.5):
    """The first true value of condition(), polled until `timeout` seconds; AssertionError after."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def run_cli(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*HPCTUNE, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="session")
def learnable_data() -> Path:
    """The demo dataset: a good lr0 reaches a clearly non-zero mAP in a few one-thread epochs."""
    from hpctune.yolo.demo import DEMO_DATASET, make_demo_dataset

    return make_demo_dataset(SHARED / "data" / "demo", **DEMO_DATASET, seed=0)


def _key_values(args: dict) -> list[str]:
    return [f"{key}={value}" for key, value in args.items()]


# Quick real searches on `learnable_data`: the demo's training arguments and space as CLI input.
QUICK_TRAIN_ARGS = _key_values(DEMO_TRAIN_ARGS)
QUICK_SPACE = yaml.safe_dump(DEMO_SPACE)


def read_records(run_dir: Path) -> dict[str, list[dict]]:
    """Every trial's per-epoch records, as written (repeats included)."""
    import json

    return {
        folder.name: [json.loads(line) for line in (folder / "epochs.jsonl").read_text().splitlines()]
        for folder in sorted((run_dir / "trials").iterdir()) if (folder / "epochs.jsonl").exists()
    }


def pytest_collection_modifyitems(config, items):
    """Mark tests by folder: tests/search are slow (real Ray, real YOLO), tests/slurm need the Slurm cluster."""
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        if folder == "search":
            item.add_marker(pytest.mark.slow)
        elif folder == "slurm":
            item.add_marker(pytest.mark.slurm)
