"""A trial whose newest checkpoint cannot be read resumes from the one before it (or from epoch 0), and its
records then claim only the epochs the checkpoint it loads holds."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from hpctune.run.records import (
    PREVIOUS_WEIGHTS,
    RECORDS,
    RESUME_WEIGHTS,
    EpochRecords,
    completed_epochs,
    resumable_history,
    save_resume_weights,
)
from hpctune.yolo.trainer import checkpoint_epoch

EPOCHS = 10


def _checkpoint(path: Path, epoch: int) -> None:
    """A checkpoint as Ultralytics saves it: its own epoch counter starts at 0."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": epoch - 1, "ema": None, "optimizer": {"lr": 0.01}}, path)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _train_epochs(folder: Path, epochs: range) -> None:
    """What a trial leaves behind per epoch: the checkpoint saved, then the record appended."""
    records = EpochRecords(folder / RECORDS)
    for epoch in epochs:
        weights = folder / "weights" / "last.pt"
        _checkpoint(weights, epoch)
        save_resume_weights(weights, folder)
        records.append({"epoch": epoch, "metrics": {"m": epoch / 10}})


def _resume(folder: Path) -> list[dict]:
    history = completed_epochs(EpochRecords(folder / RECORDS).read())
    return resumable_history(folder, history, EPOCHS, checkpoint_epoch)


def test_the_checkpoint_epoch_is_read_from_a_real_checkpoint(tmp_path):
    _checkpoint(tmp_path / "last.pt", 4)
    assert checkpoint_epoch(tmp_path / "last.pt") == 4
    _truncate(tmp_path / "last.pt")
    assert checkpoint_epoch(tmp_path / "last.pt") is None
    assert checkpoint_epoch(tmp_path / "missing.pt") is None


def test_each_save_keeps_the_previous_epoch(tmp_path):
    _train_epochs(tmp_path, range(1, 4))
    assert checkpoint_epoch(tmp_path / RESUME_WEIGHTS) == 3
    assert checkpoint_epoch(tmp_path / PREVIOUS_WEIGHTS) == 2
    assert sorted(p.name for p in (tmp_path / "resume").iterdir()) == ["last.pt", "previous.pt"]


def test_a_readable_checkpoint_resumes_where_the_records_end(tmp_path, caplog):
    _train_epochs(tmp_path, range(1, 4))
    with caplog.at_level(logging.WARNING):
        history = _resume(tmp_path)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert caplog.records == []


def test_an_unreadable_checkpoint_falls_back_to_the_previous_epoch(tmp_path, caplog):
    _train_epochs(tmp_path, range(1, 4))
    _truncate(tmp_path / RESUME_WEIGHTS)
    with caplog.at_level(logging.WARNING):
        history = _resume(tmp_path)
    assert [r["epoch"] for r in history] == [1, 2]  # epoch 3 trains again
    assert checkpoint_epoch(tmp_path / RESUME_WEIGHTS) == 2  # what the trainer loads
    assert [r["epoch"] for r in EpochRecords(tmp_path / RECORDS).read()] == [1, 2]  # no claim on epoch 3
    (line,) = [r.getMessage() for r in caplog.records]
    assert "resume/last.pt is unreadable" in line and "resume/previous.pt (epoch 2)" in line, line
    assert "epochs 3-3 train again" in line, line


def test_retraining_after_a_fallback_keeps_a_fallback(tmp_path):
    _train_epochs(tmp_path, range(1, 4))
    _truncate(tmp_path / RESUME_WEIGHTS)
    _resume(tmp_path)
    _train_epochs(tmp_path, range(3, 5))  # the resumed trial trains epochs 3 and 4
    assert checkpoint_epoch(tmp_path / RESUME_WEIGHTS) == 4
    assert checkpoint_epoch(tmp_path / PREVIOUS_WEIGHTS) == 3
    assert [r["epoch"] for r in _resume(tmp_path)] == [1, 2, 3, 4]


def test_a_checkpoint_ahead_of_the_records_is_passed_over(tmp_path, caplog):
    """Killed between saving epoch 4's checkpoint and recording it: epoch 4's metrics are unknown."""
    _train_epochs(tmp_path, range(1, 4))
    _checkpoint(tmp_path / "weights" / "last.pt", 4)
    save_resume_weights(tmp_path / "weights" / "last.pt", tmp_path)
    with caplog.at_level(logging.WARNING):
        history = _resume(tmp_path)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert checkpoint_epoch(tmp_path / RESUME_WEIGHTS) == 3
    assert "resume/last.pt holds epoch 4" in caplog.records[0].getMessage()


def test_no_readable_checkpoint_restarts_the_trial_with_one_warning(tmp_path, caplog):
    _train_epochs(tmp_path, range(1, 4))
    _truncate(tmp_path / RESUME_WEIGHTS)
    _truncate(tmp_path / PREVIOUS_WEIGHTS)
    with caplog.at_level(logging.WARNING):
        history = _resume(tmp_path)
    assert history == []
    assert EpochRecords(tmp_path / RECORDS).read() == []
    assert not (tmp_path / RESUME_WEIGHTS).exists() and not (tmp_path / PREVIOUS_WEIGHTS).exists()
    (line,) = [r.getMessage() for r in caplog.records]
    assert "no readable checkpoint" in line and "from epoch 0" in line, line


@pytest.mark.parametrize("last", [{"epoch": EPOCHS, "metrics": {}},
                                  {"epoch": EPOCHS, "final": True, "metrics": {}}])
def test_a_trial_whose_training_ended_needs_no_checkpoint(tmp_path, last):
    (tmp_path / RECORDS).write_text(json.dumps({"epoch": 1, "metrics": {}}) + "\n" + json.dumps(last) + "\n")
    assert _resume(tmp_path)[-1] == last  # only its final evaluation (if any) is due
