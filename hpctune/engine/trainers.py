"""Trainers by name: the engine runs any of them and imports none of them.

A trainer module provides `trainable(config, settings)` (a Ray Tune function trainable that follows
hpctune.engine.trial's protocol), `prepare_env(env_dir) -> dict` (the environment its trial processes
need) and `local_resources(spec) -> (cpus, gpus)` (what a local, non-SLURM search may use); optionally
`callbacks(spec) -> list` (Ray Tune callbacks of its own for the driver).
"""

from __future__ import annotations

import importlib
from types import ModuleType

TRAINERS = {
    "yolo": "hpctune.yolo.trainer",  # real Ultralytics training
    "simulated": "hpctune.testing.simulate",  # sleeps through epochs, for scale benchmarks
}


def load(name: str) -> ModuleType:
    if name not in TRAINERS:
        raise ValueError(f"unknown trainer {name!r}: one of {', '.join(TRAINERS)}")
    return importlib.import_module(TRAINERS[name])
