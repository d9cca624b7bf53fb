"""Growing a search: `hpctune resume RUN_DIR --max-samples N` (and `--time-budget`) on a finished, a
budget-ended and a killed search. Simulated trials through the real driver, real Ray, real ASHA and
the real TPE searcher: exactly N minus the trials already created are added, the searcher goes on from
its restored state, nothing finished is redone, no epoch is trained twice, later resumes keep N.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, read_records, run_cli
from test_simulate import DRIVER, _kill_group

from hpctune import api
from hpctune.run.rundir import RunDir
from hpctune.testing import simulate
from hpctune.yolo.arguments import UNLIMITED_TRIALS

EPOCHS, GRACE, RF, SLOTS = 4, 1, 2, 2  # ASHA's rungs at epochs 1 and 2


def _create(storage: Path, name: str, trials: int, epoch_s: float = 0.3, time_budget_s: float = 0.0) -> RunDir:
    spec = simulate.make_spec(name=name, storage=storage, trials=trials, epochs=EPOCHS, grace_period=GRACE,
                              reduction_factor=RF, seed=7, epoch_s=epoch_s, gpus_per_node=SLOTS)
    spec.search_alg = "tpe"  # a searcher with state to go on from
    spec.time_budget_s = time_budget_s
    return api.create_run(spec)


def _journal(rundir: RunDir) -> list[dict]:
    return [json.loads(line) for line in rundir.suggestions.read_text().splitlines()]


def _searcher_state(rundir: RunDir) -> dict:
    """The searcher's state in the newest experiment snapshot (hpctune's searchers save plain JSON)."""
    return json.loads(max(rundir.experiment.glob("searcher-state-*.pkl")).read_text())


def _rungs(rundir: RunDir) -> dict[int, dict[str, float]]:
    return {rung["milestone"]: rung["recorded"] for rung in json.loads(rundir.asha_rungs.read_text())}


def _files(rundir: RunDir) -> dict[str, bytes]:
    return {str(p.relative_to(rundir.path)): p.read_bytes() for p in sorted(rundir.path.rglob("*")) if p.is_file()}


def _check_epochs_once(records: dict[str, list[dict]]) -> None:
    """Epochs 1..n once each, in order, per trial: nothing trained twice; a final record only at the end."""
    for trial, rs in records.items():
        trained = [r["epoch"] for r in rs if not r.get("final")]
        assert trained == list(range(1, len(trained) + 1)), (trial, trained)
        finals = [r for r in rs if r.get("final")]
        assert len(finals) <= 1 and (not finals or trained[-1] == EPOCHS), (trial, trained, finals)


def _check_grown(rundir: RunDir, before: dict[str, list[dict]], journal_before: list[dict],
                 rungs_before: dict[int, dict[str, float]], total: int, session: int) -> dict[str, list[dict]]:
    """`total` trials in all, one per suggestion; finished trials untouched, the rest continued; rungs kept."""
    after = read_records(rundir.path)
    journal = _journal(rundir)
    assert journal[: len(journal_before)] == journal_before, "recorded suggestions are append-only"
    ids = [entry["trial_id"] for entry in journal]
    assert len(ids) == len(set(ids)) == total, ids
    assert set(after) == set(ids), "a trial was created twice or not at all"
    _check_epochs_once(after)
    for trial, rs in before.items():
        assert after[trial][: len(rs)] == rs, "records are append-only"
        if any(r.get("final") for r in rs):
            assert after[trial] == rs, f"finished trial {trial} ran again"
    for trial in set(after) - set(before):
        assert {r["session"] for r in after[trial]} == {session}, trial
    rungs = _rungs(rundir)
    for milestone, recorded in rungs_before.items():
        for trial, value in recorded.items():
            assert rungs[milestone].get(trial) == value, (milestone, trial)
    return after


def _check_searcher_went_on(rundir: RunDir, state_before: dict, total: int) -> None:
    """The searcher's last state knows every trial, and the earlier ones as it had learnt them."""
    state = _searcher_state(rundir)
    assert len(state["trials"]) == total
    for trial, learnt in state_before["trials"].items():
        if learnt["outcome"] is not None:
            assert state["trials"][trial] == learnt, trial


def _summary(rundir: RunDir) -> dict:
    return json.loads(rundir.summary.read_text())


def test_a_finished_search_grows_by_exactly_the_new_trials(shared_tmp):
    rundir = _create(shared_tmp, "finished", trials=4)
    first = api.resume(rundir.path)
    assert first.finished and len(first.table) == 4
    before, journal_before, rungs_before = read_records(rundir.path), _journal(rundir), _rungs(rundir)
    state_before = _searcher_state(rundir)

    # Fewer trials than created: one line, exit 2, nothing written.
    files_before = _files(rundir)
    refused = run_cli("resume", str(rundir.path), "--max-samples", "3", timeout=120)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"hpctune: error: max_samples 3 is below the 4 trials run {rundir.path} already created: "
        "give --max-samples 4 or more"]
    assert _files(rundir) == files_before

    started = time.monotonic()
    grown = api.resume(rundir.path, max_samples=7)
    assert grown.finished and len(grown.table) == 7, grown.table
    assert time.monotonic() - started < 300
    after = _check_grown(rundir, before, journal_before, rungs_before, total=7, session=2)
    _check_searcher_went_on(rundir, state_before, total=7)
    assert set(_summary(rundir)["trials"]) <= {"completed", "stopped"}
    manifest = json.loads(rundir.manifest.read_text())
    assert manifest["spec"]["max_samples"] == 7 and len(manifest["sessions"]) == 2
    assert [(g["max_samples"], g["trials_before"]) for g in manifest["grown"]] == [(7, 4)]

    # A later plain resume keeps the new cap: nothing added, nothing run again.
    again = api.resume(rundir.path)
    assert again.finished and len(again.table) == 7
    assert read_records(rundir.path) == after and len(_journal(rundir)) == 7


def test_a_search_its_time_budget_ended_grows_by_budget_then_by_count(shared_tmp):
    # The first session's budget ends the search (the searcher says FINISHED, which Ray keeps).
    rundir = _create(shared_tmp, "budget", trials=UNLIMITED_TRIALS, epoch_s=0.5, time_budget_s=5.0)
    first = api.resume(rundir.path)
    created = len(first.table)
    assert first.finished and 0 < created < 40, created
    before, journal_before, rungs_before = read_records(rundir.path), _journal(rundir), _rungs(rundir)

    # --time-budget alone: new trials for another minute (a Slurm time, whole minutes), then it ends again.
    started = time.monotonic()
    grown = api.resume(rundir.path, time_budget="1")
    budget_run = time.monotonic() - started
    assert grown.finished and len(grown.table) > created, (created, len(grown.table))
    assert budget_run < 240, budget_run
    after = _check_grown(rundir, before, journal_before, rungs_before, total=len(grown.table), session=2)
    spec = json.loads(rundir.manifest.read_text())["spec"]
    assert (spec["max_samples"], spec["time_budget_s"]) == (UNLIMITED_TRIALS, 60.0)

    # --max-samples below the old cap, over the trials created: exactly that many, the budget kept.
    total = len(grown.table) + 2
    journal_before, rungs_before = _journal(rundir), _rungs(rundir)
    counted = api.resume(rundir.path, max_samples=total)
    assert counted.finished and len(counted.table) == total
    _check_grown(rundir, after, journal_before, rungs_before, total=total, session=3)
    spec = json.loads(rundir.manifest.read_text())["spec"]
    assert (spec["max_samples"], spec["time_budget_s"]) == (total, 60.0)


def test_a_killed_search_grows_without_training_an_epoch_twice(shared_tmp):
    rundir = _create(shared_tmp, "killed", trials=10, epoch_s=0.5)
    env = {**os.environ, "HPCTUNE_PROGRESS": "off", "PYTHONPATH": str(REPO)}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(rundir.path)], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and driver.poll() is None:
            records = read_records(rundir.path) if rundir.trials.exists() else {}
            finished = [t for t, rs in records.items() if any(r.get("final") for r in rs)]
            if finished and len(records) >= 5:
                break
            time.sleep(0.3)
        assert driver.poll() is None, "the search ended before it could be interrupted"
    finally:
        _kill_group(driver)
    before, journal_before, rungs_before = read_records(rundir.path), _journal(rundir), _rungs(rundir)
    assert len(journal_before) < 10

    result = api.resume(rundir.path, max_samples=14)
    assert result.finished and len(result.table) == 14
    _check_grown(rundir, before, journal_before, rungs_before, total=14, session=2)
    assert set(_summary(rundir)["trials"]) <= {"completed", "stopped"}
    assert len(_searcher_state(rundir)["trials"]) == 14
