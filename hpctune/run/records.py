"""A trial's own records in its folder: one line per epoch in epochs.jsonl, the resume weights."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

RESUME_WEIGHTS = "resume/last.pt"
RECORDS = "epochs.jsonl"


class EpochRecords:
    """Append-only per-epoch log of one trial; a line is written only once its checkpoint is safe."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                break  # a line torn by a crash ends the usable history
        return records

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())


def completed_epochs(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest record per epoch, in epoch order (a repeated epoch replaces the older one)."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for record in records:
        by_epoch[record["epoch"]] = record
    return [by_epoch[e] for e in sorted(by_epoch)]
