"""Tune, then train the winner at full length (--final-epochs, `hpctune train`): the final training is
checkpointed every epoch like any trial, and a driver killed during it resumes without retraining an epoch."""

from __future__ import annotations

import json
import os

from conftest import QUICK_SPACE, QUICK_TRAIN_ARGS, run_cli
from test_resume import sigkill_driver_when

FINAL_EPOCHS = 5


def _final_records(run_dir) -> dict[str, list[dict]]:
    folder = run_dir / "final" / "trials"
    return {p.parent.name: [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
            for p in folder.glob("*/epochs.jsonl")} if folder.is_dir() else {}


def _mid_final(run_dir) -> bool:
    records = _final_records(run_dir)
    return any(1 <= len([r for r in rs if not r.get("final")]) <= FINAL_EPOCHS - 2 for rs in records.values())


def test_final_training_killed_then_resumed_retrains_nothing(shared_tmp, learnable_data):
    (shared_tmp / "space.yaml").write_text(QUICK_SPACE)
    run_dir = shared_tmp / "final"
    sigkill_driver_when(
        ["tune", "model=yolov8n.yaml", f"data={learnable_data}", "epochs=2", *QUICK_TRAIN_ARGS,
         "--space", str(shared_tmp / "space.yaml"), "--grace-period", "1", "--max-samples", "2",
         "--final-epochs", str(FINAL_EPOCHS), "--storage", str(shared_tmp), "--name", "final"],
        run_dir, lambda: _mid_final(run_dir), "the final training mid-way")
    before = _final_records(run_dir)

    result = run_cli("resume", str(run_dir), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "final training (5 epochs)" in result.stdout, result.stdout
    after = _final_records(run_dir)
    assert set(after) == set(before) and len(after) == 1
    (trial, records), = before.items()
    assert after[trial][: len(records)] == records, "records are append-only"
    last = max(r["epoch"] for r in records)
    again = [r["epoch"] for r in after[trial][len(records):] if not r.get("final") and r["epoch"] <= last]
    assert again == [], f"epochs {again} trained again"
    assert after[trial][-1].get("final") and after[trial][-1]["epoch"] == FINAL_EPOCHS
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["finished"] and summary["final"][0]["state"] == "completed", summary
    assert summary["final_weights"] and os.path.exists(summary["final_weights"])

    # the winner's configuration: the search's best trial
    journal = {e["trial_id"]: e["config"] for e in map(json.loads, (run_dir / "suggestions.jsonl").open())}
    ran = json.loads(next((run_dir / "final" / "tune").glob("*/params.json")).read_text())
    assert ran == journal[summary["best_trial"]]

    # `hpctune train` on it: the same settings are done already; others are refused in one line
    assert run_cli("train", str(run_dir), "--epochs", str(FINAL_EPOCHS)).returncode == 0
    other = run_cli("train", str(run_dir), "--epochs", "9")
    assert other.returncode == 2 and "has a final training of 5 epochs" in other.stderr
