"""Experiment tracking callbacks (W&B, TensorBoard) for the search."""

from __future__ import annotations

from ray.tune import Callback

from hpctune.rundir import RunDir
from hpctune.spec import RunSpec


def callbacks(spec: RunSpec, rundir: RunDir) -> list[Callback]:
    return []
