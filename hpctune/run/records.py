"""A trial's own records in its folder: one line per epoch in epochs.jsonl, the resume weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpctune.run.rundir import append_jsonl, read_jsonl

RESUME_WEIGHTS = "resume/last.pt"
RECORDS = "epochs.jsonl"


class EpochRecords:
    """Append-only per-epoch log of one trial; a line is written only once its checkpoint is safe."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path)

    def append(self, record: dict[str, Any]) -> None:
        append_jsonl(self.path, record)


def completed_epochs(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest record per epoch, in epoch order (a repeated epoch replaces the older one)."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for record in records:
        by_epoch[record["epoch"]] = record
    return [by_epoch[e] for e in sorted(by_epoch)]
