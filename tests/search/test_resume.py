"""The driver SIGKILLed mid-search, then `hpctune resume`: nothing finished is redone, nothing
checkpointed is trained again, ASHA keeps the rung records it had, and the stateful searchers
suggest nothing twice: every trial keeps the configuration recorded when it was suggested."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest
from conftest import HPCTUNE, QUICK_SPACE, QUICK_TRAIN_ARGS, REPO, read_records, run_cli, wait_for


def _trial_processes(run_dir: Path) -> list[psutil.Process]:
    """Ray worker processes of this run (its runtime environment names the run directory)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if not " ".join(process.info["cmdline"] or []).startswith("ray::"):
            continue
        try:
            if str(run_dir) in process.environ().get("YOLO_CONFIG_DIR", ""):
                found.append(process)
        except psutil.Error:
            continue
    return found


def sigkill_driver_when(command: list[str], run_dir: Path, condition, what: str) -> None:
    """Run `hpctune ...` as a driver, SIGKILL it once `condition()` holds (before the run ends), and
    wait until none of its trial processes can still write."""
    driver = subprocess.Popen([*HPCTUNE, *command], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: condition() or driver.poll() is not None, 900, what)
        assert driver.poll() is None, f"the run ended before {what} could be interrupted"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
    wait_for(lambda: not _trial_processes(run_dir), 60, "the killed driver's trial processes to exit")


def _ray_statuses(run_dir: Path) -> dict[str, str]:
    """Trial statuses in Ray's newest experiment snapshot ({} while none is readable)."""
    states = sorted((run_dir / "tune").glob("experiment_state-*.json"))
    try:
        trial_data = json.loads(states[-1].read_text())["trial_data"]
    except (IndexError, OSError, ValueError, KeyError):
        return {}
    trials = [json.loads(state) for state, _ in trial_data]
    return {trial["trial_id"]: trial["status"] for trial in trials}


EPOCHS, GRACE = 5, 2  # one ASHA rung at epoch 2 (reduction factor 3)


def _mid_run(run_dir: Path) -> dict[str, str] | None:
    """Ray's statuses once one trial is done and another is mid-way: late enough to have checkpointed
    epochs, early enough to be unfinished after the epoch it may still complete while Ray takes it
    down with the killed driver (ASHA stops most trials at the rung, so before it counts too)."""
    if not (run_dir / "trials").exists():
        return None
    statuses = _ray_statuses(run_dir)
    done = [t for t, status in statuses.items() if status == "TERMINATED"]
    in_flight = [t for t, rs in read_records(run_dir).items()
                 if rs and t not in done and 1 <= max(r["epoch"] for r in rs) <= EPOCHS - 2]
    return statuses if done and in_flight else None


def _journal(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "suggestions.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("search", ["evolve", "tpe"])
def test_sigkill_then_resume_loses_nothing(shared_tmp, learnable_data, search):
    (shared_tmp / "space.yaml").write_text(QUICK_SPACE)
    name = f"killed-{search}"
    run_dir = shared_tmp / name
    driver = subprocess.Popen(
        [*HPCTUNE, "tune", "model=yolov8n.yaml", f"data={learnable_data}", f"epochs={EPOCHS}", *QUICK_TRAIN_ARGS,
         "--space", str(shared_tmp / "space.yaml"), "--grace-period", str(GRACE), "--reduction-factor", "3",
         "--max-samples", "5", "--seed", "5", "--storage", str(shared_tmp), "--name", name, "--search", search],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        wait_for(lambda: _mid_run(run_dir) or driver.poll() is not None, 900, "a finished and a running trial")
        assert driver.poll() is None, "the search ended before it could be interrupted"
        os.kill(driver.pid, signal.SIGKILL)
        done_at_kill = {t for t, status in _ray_statuses(run_dir).items() if status == "TERMINATED"}
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
    # Ray takes the trials down with their driver; wait until no trial process can still write.
    wait_for(lambda: not _trial_processes(run_dir), 60, "the killed driver's trial processes to exit")
    before = read_records(run_dir)
    rungs_before = json.loads((run_dir / "asha_rungs.json").read_text())
    journal_before = _journal(run_dir)

    result = run_cli("resume", str(run_dir), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    after = read_records(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["finished"], summary
    assert set(summary["trials"]) <= {"completed", "stopped"}, summary
    assert len(json.loads((run_dir / "manifest.json").read_text())["sessions"]) == 2

    resumed_from = {}
    for trial, records in before.items():
        new = after[trial][len(records):]
        assert after[trial][: len(records)] == records, "records are append-only"
        if trial in done_at_kill or any(r.get("final") for r in records):
            assert new == [], f"finished trial {trial} was run again"
            continue
        last = max(r["epoch"] for r in records)
        trained_again = [r["epoch"] for r in new if not r.get("final") and r["epoch"] <= last]
        assert trained_again == [], f"trial {trial} trained epochs {trained_again} again (had {last})"
        if new:
            resumed_from[trial] = (last, min(r["epoch"] for r in new))
            assert all(r["session"] == 2 for r in new)
    # Trials interrupted mid-way continued at their next epoch, not at epoch 1.
    assert any(start == last + 1 and last >= 1 for last, start in resumed_from.values()), resumed_from

    rungs = json.loads((run_dir / "asha_rungs.json").read_text())
    rungs_after = {rung["milestone"]: rung["recorded"] for rung in rungs}
    for rung in rungs_before:
        for trial, value in rung["recorded"].items():
            assert rungs_after[rung["milestone"]].get(trial) == value, (rung["milestone"], trial)

    # The searcher: every trial suggested once, each with one configuration, kept across the kill.
    journal = _journal(run_dir)
    assert journal[: len(journal_before)] == journal_before, "recorded suggestions are append-only"
    ids = [entry["trial_id"] for entry in journal]
    assert len(ids) == len(set(ids)) == 5, ids
    assert len({json.dumps(entry["config"], sort_keys=True) for entry in journal}) == 5, "a configuration ran twice"
    assert journal[0]["baseline"]
    ran = {row["trial_id"]: float(row["config/lr0"]) for row in _rows(run_dir)}
    assert ran == {entry["trial_id"]: entry["config"]["lr0"] for entry in journal}


def _rows(run_dir: Path) -> list[dict]:
    import csv

    return list(csv.DictReader((run_dir / "results.csv").open()))
