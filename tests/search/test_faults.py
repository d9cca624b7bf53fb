"""Faults injected into real searches (real Ray, real YOLO training): each ends with the search complete and
no epoch trained twice that a checkpoint held, or with one clear line.

- a corrupt `resume/last.pt` (a crash or a full disk mid-copy) found on resume: the trial says so in its
  output.log, resumes from `resume/previous.pt` and trains only the epoch that checkpoint lacks.
(Torn record lines, NaN metrics and a refused flock are unit-tested on the real code; a stop that hangs
inside its signal lead, a lost Ray head and a second job of a running run are Slurm jobs in tests/slurm.)
"""

from __future__ import annotations

import json

from conftest import QUICK_SPACE, QUICK_TRAIN_ARGS, read_records, run_cli
from test_resume import sigkill_driver_when

EPOCHS = 6


def _trial_with_two_checkpoints(run_dir):
    """A trial mid-way with both resume checkpoints, not finished: (trial id, epochs recorded) or None."""
    if not (run_dir / "trials").exists():
        return None
    for trial, records in read_records(run_dir).items():
        epochs = [r["epoch"] for r in records if not r.get("final")]
        folder = run_dir / "trials" / trial / "resume"
        if 2 <= len(epochs) <= EPOCHS - 2 and (folder / "last.pt").exists() and (folder / "previous.pt").exists():
            return trial, max(epochs)
    return None


def test_a_corrupt_last_checkpoint_falls_back_to_the_previous_epoch(shared_tmp, learnable_data):
    (shared_tmp / "space.yaml").write_text(QUICK_SPACE)
    run_dir = shared_tmp / "corrupt"
    sigkill_driver_when(
        ["tune", "model=yolov8n.yaml", f"data={learnable_data}", f"epochs={EPOCHS}", *QUICK_TRAIN_ARGS,
         "--space", str(shared_tmp / "space.yaml"), "--grace-period", str(EPOCHS), "--max-samples", "2",
         "--storage", str(shared_tmp), "--name", "corrupt"],
        run_dir, lambda: _trial_with_two_checkpoints(run_dir), "two checkpoints")
    trial, recorded = _trial_with_two_checkpoints(run_dir)
    last = run_dir / "trials" / trial / "resume" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])  # torn mid-copy
    before = read_records(run_dir)[trial]

    result = run_cli("resume", str(run_dir), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["finished"], summary
    output = (run_dir / "trials" / trial / "output.log").read_text()
    assert "resume/last.pt is unreadable: resuming from resume/previous.pt" in output, output[-3000:]
    after = [r for r in read_records(run_dir)[trial] if not r.get("final")]
    assert [r["epoch"] for r in after] == list(range(1, EPOCHS + 1)), "an epoch missing or recorded twice"
    retrained = [r["epoch"] for r in after if r["session"] == 2]
    assert min(retrained) == recorded, f"resumed at epoch {min(retrained)}, not at the lost epoch {recorded}"
    kept = [r for r in before if not r.get("final") and r["epoch"] < recorded]
    assert after[: len(kept)] == kept, "epochs the previous checkpoint held were trained again"
