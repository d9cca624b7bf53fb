"""RunSpec: everything a search needs, resolved and validated, as written to the run manifest."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

UNLIMITED_TRIALS = 100_000  # --time-budget without --max-samples: the budget ends the search


@dataclass
class RunSpec:
    model: str
    data: str
    task: str
    metric: str
    epochs: int
    grace_period: int
    reduction_factor: int
    max_samples: int
    gpu_per_trial: float
    cpus_per_trial: float
    seed: int
    name: str
    storage: str
    space: dict[str, Any]
    train_args: dict[str, Any] = field(default_factory=dict)
    data_config: dict[str, Any] = field(default_factory=dict)
    wandb: dict[str, Any] = field(default_factory=dict)  # empty: no W&B; else project, entity, group, mode
    cluster: dict[str, Any] = field(default_factory=dict)  # empty: local; else the SLURM settings of the job
    simulate: dict[str, Any] = field(default_factory=dict)  # settings of the simulated trainer (benchmarks)
    trainer: str = "yolo"  # hpctune.engine.trainers name
    search_alg: str = "random"  # hpctune.engine.searchers name
    baseline: dict[str, Any] = field(default_factory=dict)  # the first trial: the searched keys, not tuned
    starts: list[dict[str, Any]] = field(default_factory=list)  # trials after it: known-good starting points
    mutation_gains: dict[str, float] = field(default_factory=dict)  # evolve: a key's step relative to the others
    time_budget_s: float = 0.0  # > 0: start trials while one can still reach the first rung in this time
    final_epochs: int = 0  # > 0: after the search, train the best configuration(s) this long
    final_top_k: int = 1
    warm_start: str = ""  # a run directory whose trials the searcher learns from before its first suggestion

    @property
    def run_dir(self) -> Path:
        return Path(self.storage) / self.name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Resources:
    """What one node offers to trials: the allocation's share inside SLURM, the machine's outside."""

    cpus: int
    gpus: int

    @classmethod
    def detect(cls) -> Resources:
        from hpctune.slurm.allocation import Allocation

        allocation = Allocation.from_env()
        if allocation is not None:
            return cls(cpus=allocation.cpus, gpus=allocation.gpus)
        import torch

        return cls(cpus=len(os.sched_getaffinity(0)), gpus=torch.cuda.device_count())
