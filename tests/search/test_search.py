"""A real search: tiny YOLO from yaml, generated data, CPU. ASHA stops trials; results are usable."""

from __future__ import annotations

import csv
import json
import os
import subprocess

import yaml
from conftest import QUICK_SPACE, QUICK_TRAIN_ARGS, read_records, run_cli


def test_real_search_stops_bad_trials_and_delivers_a_usable_best_config(shared_tmp, learnable_data):
    (shared_tmp / "space.yaml").write_text(QUICK_SPACE)
    # random: independent draws, some in the space's bad regions, fall below a rung's median. evolve climbs
    # from the baseline, and when every child beats the median of those before it ASHA rightly stops none.
    result = run_cli(
        "tune", "model=yolov8n.yaml", f"data={learnable_data}", "epochs=6", *QUICK_TRAIN_ARGS,
        "--space", str(shared_tmp / "space.yaml"), "--grace-period", "4", "--reduction-factor", "2",
        "--max-samples", "6", "--seed", "0", "--search", "random", "--storage", str(shared_tmp), "--name", "search",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = shared_tmp / "search"
    assert f"best hyperparameters: {run_dir / 'best_hyperparameters.yaml'}" in result.stdout

    rows = list(csv.DictReader((run_dir / "results.csv").open()))
    assert len(rows) == 6
    states = {row["trial_id"]: row["state"] for row in rows}
    stopped = [r for r in rows if r["state"] == "stopped"]
    completed = [r for r in rows if r["state"] == "completed"]
    assert stopped, f"ASHA stopped no trial: {states}"
    assert all(int(r["epochs"]) < 6 for r in stopped)
    assert completed and all(int(r["epochs"]) == 6 for r in completed)

    # Per-epoch records agree with the table: one record per epoch trained, a final one for completed trials.
    records = read_records(run_dir)
    for row in rows:
        epochs = [r["epoch"] for r in records[row["trial_id"]] if not r.get("final")]
        assert epochs == list(range(1, int(row["epochs"]) + 1))
        assert any(r.get("final") for r in records[row["trial_id"]]) == (row["state"] == "completed")

    # The journal recorded the configurations the trials ran, one per trial, the first one the baseline.
    journal = [json.loads(line) for line in (run_dir / "suggestions.jsonl").read_text().splitlines()]
    assert sorted(e["trial_id"] for e in journal) == sorted(r["trial_id"] for r in rows)
    ran = {r["trial_id"]: round(float(r["config/lr0"]), 12) for r in rows}
    assert all(ran[e["trial_id"]] == round(e["config"]["lr0"], 12) for e in journal)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert journal[0]["baseline"] and journal[0]["config"] == manifest["spec"]["baseline"]
    assert "vs baseline" in result.stdout, result.stdout

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["finished"] and summary["best_metric"] > 0.01, summary
    best = next(r for r in rows if r["trial_id"] == summary["best_trial"])
    assert best["state"] == "completed"

    # Best weights were kept: stripped by Ultralytics' final evaluation (no optimizer state).
    import torch

    checkpoint = torch.load(run_dir / "best.pt", weights_only=False)
    assert checkpoint["optimizer"] is None and checkpoint["model"] is not None

    # best_hyperparameters.yaml works as `yolo train cfg=...`.
    cfg = yaml.safe_load((run_dir / "best_hyperparameters.yaml").read_text())
    assert abs(cfg["lr0"] - float(best["config/lr0"])) < 1e-12 and cfg["optimizer"] == "AdamW"
    env = {**os.environ, "YOLO_CONFIG_DIR": str(run_dir / "env" / "ultralytics"), "YOLO_OFFLINE": "1"}
    yolo = os.path.join(os.path.dirname(os.sys.executable), "yolo")
    retrain = subprocess.run(
        [yolo, "train", f"cfg={run_dir / 'best_hyperparameters.yaml'}", "model=yolov8n.yaml",
         f"data={learnable_data}", "epochs=1", "device=cpu", "workers=0", f"project={shared_tmp}", "name=retrain"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert retrain.returncode == 0, retrain.stderr[-3000:]
    used = yaml.safe_load((shared_tmp / "retrain" / "args.yaml").read_text())
    assert used["lr0"] == cfg["lr0"] and used["momentum"] == cfg["momentum"] and used["optimizer"] == "AdamW"
