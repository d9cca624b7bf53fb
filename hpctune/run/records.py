"""A trial's own records in its folder: one line per epoch in epochs.jsonl, the resume weights."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpctune.run.rundir import append_jsonl, atomic_copy, atomic_write_text, fsync_dir, read_jsonl

RESUME_WEIGHTS = "resume/last.pt"
PREVIOUS_WEIGHTS = "resume/previous.pt"  # the epoch before: what a trial resumes from if last.pt is unreadable
RECORDS = "epochs.jsonl"

EpochOf = Callable[[Path], "int | None"]  # the epoch a checkpoint file holds; None where it cannot be read

log = logging.getLogger(__name__)


class EpochRecords:
    """Append-only per-epoch log of one trial; a line is written only once its checkpoint is safe."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path)

    def append(self, record: dict[str, Any]) -> None:
        append_jsonl(self.path, record)

    def keep_until(self, epoch: int) -> None:
        """Forget the records after `epoch`, rewritten atomically: their checkpoint is lost."""
        kept = [r for r in self.read() if r.get("epoch", 0) <= epoch]
        atomic_write_text(self.path, "".join(json.dumps(r, default=float) + "\n" for r in kept))


def completed_epochs(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest record per epoch, in epoch order (a repeated epoch replaces the older one)."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for record in records:
        by_epoch[record["epoch"]] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


def save_resume_weights(source: Path, folder: Path) -> None:
    """This epoch's checkpoint becomes resume/last.pt; the one it replaces stays as resume/previous.pt.
    Called before the epoch's record is appended, so the records never run ahead of a checkpoint."""
    last = folder / RESUME_WEIGHTS
    if last.exists():
        os.replace(last, folder / PREVIOUS_WEIGHTS)  # made durable by atomic_copy's folder fsync
    atomic_copy(source, last)


def usable_checkpoint(folder: Path, recorded: int, epoch_of: EpochOf) -> int:
    """Put the newest readable checkpoint whose epoch the records reach at resume/last.pt and return
    its epoch; 0 (both removed) where there is none. A checkpoint ahead of the records (a crash
    between its copy and its record) is passed over: its epoch's metrics were never recorded."""
    last = folder / RESUME_WEIGHTS
    why = []  # what was wrong with each newer checkpoint, for the one log line
    for path in (last, folder / PREVIOUS_WEIGHTS):
        name = path.relative_to(folder)
        epoch = epoch_of(path) if path.exists() else None
        if epoch is not None and 0 < epoch <= recorded:
            if path != last:
                os.replace(path, last)  # from now on the newest checkpoint, rotated as usual
                fsync_dir(last.parent)
            if why or epoch < recorded:
                again = f", epochs {epoch + 1}-{recorded} train again" if epoch < recorded else ""
                log.warning("trial %s: %s: resuming from %s (epoch %d)%s", folder.name,
                            ", ".join(why) or f"the records reach epoch {recorded}", name, epoch, again)
            return epoch
        why.append(f"{name} is missing" if not path.exists() else f"{name} is unreadable" if epoch is None
                   else f"{name} holds epoch {epoch}, the records {recorded}")
    for path in (last, folder / PREVIOUS_WEIGHTS):
        path.unlink(missing_ok=True)
    log.warning("trial %s: no readable checkpoint (%s): training it again from epoch 0", folder.name, ", ".join(why))
    return 0


def resumable_history(folder: Path, history: list[dict[str, Any]], epochs: int,
                      epoch_of: EpochOf) -> list[dict[str, Any]]:
    """The part of a trial's history (completed_epochs) it can resume on: the epochs its usable
    checkpoint holds. Records past that checkpoint are dropped from epochs.jsonl too, so the trial
    trains those epochs again instead of claiming epochs it has no weights for. A finished trial,
    or one whose training ended (only its final evaluation is due), needs no checkpoint."""
    if not history or history[-1].get("final") or history[-1]["epoch"] >= epochs:
        return history
    recorded = history[-1]["epoch"]
    usable = usable_checkpoint(folder, recorded, epoch_of)
    if usable < recorded:
        EpochRecords(folder / RECORDS).keep_until(usable)
    return [r for r in history if r["epoch"] <= usable]
