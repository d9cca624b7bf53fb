"""`optimizer=auto`, resolved before the search as Ultralytics would resolve it for this run.

With `optimizer=auto` Ultralytics ignores `lr0` and `momentum` and picks the optimizer itself
(ultralytics/engine/trainer.py `build_optimizer`): for at most 10 000 optimizer iterations AdamW
with lr = 0.002 * 5 / (4 + nc) and momentum 0.9, and a zero bias warm-up; beyond that MuSGD at 0.01.
A searched `lr0` under `auto` would be a dead key, and pinning SGD instead (what plain tuners do)
trains short runs badly. hpctune pins what `auto` would have chosen, so the baseline trial is
exactly the untuned training, and the searched `lr0` varies around the rate that run would use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

AUTO_ITERATIONS = 10_000  # Ultralytics: beyond this many optimizer steps, auto picks MuSGD


@dataclass(frozen=True)
class ResolvedOptimizer:
    name: str
    lr0: float
    momentum: float
    iterations: int

    def train_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"optimizer": self.name, "lr0": self.lr0, "momentum": self.momentum}
        if self.name == "AdamW":
            args["warmup_bias_lr"] = 0.0  # what auto sets for AdamW
        return args

    def note(self) -> str:
        return (f"optimizer=auto resolved as Ultralytics would for this run ({self.iterations} optimizer steps): "
                f"{self.name} lr0={self.lr0:g} momentum={self.momentum:g}; lr0 is searched on a log scale from a third "
                f"of it up to Ultralytics' documented lr0")


def resolve_auto(data_config: dict[str, Any], train_args: dict[str, Any], epochs: int) -> ResolvedOptimizer:
    """The optimizer, learning rate and momentum `optimizer=auto` gives this dataset and these arguments."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    names = data_config.get("names")
    nc = int(data_config.get("nc") or (len(names) if names else 10))
    batch = train_args.get("batch", DEFAULT_CFG_DICT["batch"])
    nbs = train_args.get("nbs", DEFAULT_CFG_DICT["nbs"])
    images = count_images(data_config)
    # batch -1 (auto batch) or a fraction is decided on the GPU; Ultralytics' default 16 stands in
    step_batch = max(int(batch) if isinstance(batch, int) and batch > 0 else 16, int(nbs))
    iterations = math.ceil(images / step_batch) * epochs
    if iterations > AUTO_ITERATIONS:
        return ResolvedOptimizer("MuSGD", 0.01, 0.9, iterations)
    return ResolvedOptimizer("AdamW", round(0.002 * 5 / (4 + nc), 6), 0.9, iterations)


def count_images(data_config: dict[str, Any]) -> int:
    """Training images listed by a dataset yaml (folders searched recursively, .txt lists counted)."""
    from ultralytics.data.utils import IMG_FORMATS

    root = Path(data_config.get("path") or ".")
    entries = data_config.get("train") or []
    total = 0
    for entry in entries if isinstance(entries, list) else [entries]:
        path = root / str(entry)
        if path.is_dir():
            total += sum(1 for f in path.rglob("*") if f.suffix[1:].lower() in IMG_FORMATS)
        elif path.suffix == ".txt" and path.is_file():
            total += sum(1 for line in path.read_text().splitlines() if line.strip())
    return total


def lr0_range(lr0: float, documented_lr0: float) -> dict[str, list[float]]:
    """A log-scale range from a third of the lower of the resolved learning rate and Ultralytics' documented
    lr0 (where its genetic Tuner starts, under the same optimizer) up to the higher of the two.

    auto's fitted rate suits fine-tuning (it falls as classes grow: 1.2e-4 for 80); short training from scratch
    learns best near the documented 0.01, which is also the top of Ultralytics' own Ray space. Measured in
    bench_search_quality's runs: every configuration above 0.01 mAP50-95 had lr0 0.005-0.01, and none above
    0.011 learned. A factor 10 around the fitted rate alone put most draws where nothing was learned."""
    low, high = sorted((lr0, documented_lr0))
    return {"loguniform": [low / 3, high]}
