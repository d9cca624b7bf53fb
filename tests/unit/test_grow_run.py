"""Growing a search (`hpctune resume RUN_DIR --max-samples N`): the manifest update and its checks, and
the journal's count of growth requests; no Ray cluster (tests/search/test_grow.py runs real searches)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpctune.api import grow_run
from hpctune.cli import main
from hpctune.engine.journal import Journaled
from hpctune.engine.searchers import make_searcher
from hpctune.errors import RunDirError, SpecError
from hpctune.run.rundir import RunDir, append_jsonl
from hpctune.testing import simulate
from hpctune.yolo.arguments import UNLIMITED_TRIALS


def _run_with_trials(storage: Path, created: int) -> RunDir:
    """A run directory of 4 trials whose journal records `created` suggestions."""
    rundir = simulate.create_run(name="grow", storage=storage, trials=4, epochs=3, grace_period=1)
    for n in range(created):
        append_jsonl(rundir.suggestions, {"trial_id": f"abcde_{n:05d}", "n": n, "config": {"lr0": 0.01},
                                          "baseline": False})
    return rundir


def _files(rundir: RunDir) -> dict[str, bytes]:
    return {str(p.relative_to(rundir.path)): p.read_bytes() for p in sorted(rundir.path.rglob("*")) if p.is_file()}


def test_the_new_cap_and_the_request_go_to_the_manifest(tmp_path):
    rundir = _run_with_trials(tmp_path, 4)
    grow_run(rundir, max_samples=9)
    manifest = rundir.read_manifest()
    assert manifest["spec"]["max_samples"] == 9 and manifest["spec"]["time_budget_s"] == 0.0
    assert [(g["max_samples"], g["trials_before"]) for g in manifest["grown"]] == [(9, 4)]
    assert not list(rundir.path.glob(".manifest.json.*"))  # written through a temporary file, renamed over it
    grow_run(rundir, max_samples=12)
    assert len(rundir.read_manifest()["grown"]) == 2


def test_a_time_budget_alone_lifts_the_cap(tmp_path):
    rundir = _run_with_trials(tmp_path, 4)
    grow_run(rundir, time_budget="1:30:00")
    spec = rundir.read_manifest()["spec"]
    assert (spec["max_samples"], spec["time_budget_s"]) == (UNLIMITED_TRIALS, 5400.0)
    grow_run(rundir, max_samples=6)  # the budget given before is kept
    spec = rundir.read_manifest()["spec"]
    assert (spec["max_samples"], spec["time_budget_s"]) == (6, 5400.0)


def test_a_cap_below_the_trials_created_is_refused_and_the_run_untouched(tmp_path):
    rundir = _run_with_trials(tmp_path, 5)
    before = _files(rundir)
    with pytest.raises(SpecError, match=r"max_samples 3 is below the 5 trials run .* already created: "
                                        r"give --max-samples 5 or more"):
        grow_run(rundir, max_samples=3)
    assert _files(rundir) == before
    grow_run(rundir, max_samples=5)  # as many as were created: allowed, nothing new to add


@pytest.mark.parametrize("value", [0, -1, True, 2.5, UNLIMITED_TRIALS + 1])
def test_a_cap_that_is_no_trial_count_is_refused(tmp_path, value):
    with pytest.raises(SpecError, match="max_samples must be a whole number"):
        grow_run(_run_with_trials(tmp_path, 0), max_samples=value)


def test_a_run_with_a_final_training_does_not_grow(tmp_path):
    rundir = _run_with_trials(tmp_path, 4)
    rundir.final_experiment.mkdir(parents=True)
    (rundir.final_experiment / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    with pytest.raises(SpecError, match=r"has a final training \(final/\)"):
        grow_run(rundir, max_samples=8)


def test_a_run_being_driven_does_not_grow(tmp_path):
    rundir = _run_with_trials(tmp_path, 4)
    with rundir.lock(), pytest.raises(RunDirError, match="is being driven by"):
        grow_run(rundir, max_samples=8)
    assert rundir.read_manifest()["spec"]["max_samples"] == 4


def test_cli_says_one_line_and_exits_2_before_anything_starts(tmp_path):
    rundir = _run_with_trials(tmp_path, 5)
    before = _files(rundir)
    out = CliRunner().invoke(main, ["resume", str(rundir.path), "--max-samples", "2"])
    assert out.exit_code == 2, out.output
    assert out.output.strip().splitlines() == [
        f"hpctune: error: max_samples 2 is below the 5 trials run {rundir.path} already created: "
        "give --max-samples 5 or more"]
    assert _files(rundir) == before
    out = CliRunner().invoke(main, ["resume", str(rundir.path), "--time-budget", "soon"])
    assert out.exit_code == 2 and len(out.output.strip().splitlines()) == 1, out.output


def _journaled(tmp_path: Path, grown: int = 0) -> Journaled:
    searcher = make_searcher("random", space={"lr0": {"uniform": [0.001, 0.1]}}, metric="m", max_epochs=3,
                             seed=0, baseline=None)
    return Journaled(searcher, tmp_path / "suggestions.jsonl", None, grown)


def test_each_growth_request_reopens_the_search_once(tmp_path):
    journal = _journaled(tmp_path)
    assert journal.reopen(0) is False
    assert journal.reopen(1) is True and journal.reopen(1) is False
    saved = journal.get_state()
    restored = _journaled(tmp_path)
    restored.set_state(saved)
    assert restored.reopen(1) is False and restored.reopen(2) is True
    older = _journaled(tmp_path)
    older.set_state({"count": 3})  # a snapshot written before growth existed
    assert older.grown == 0 and older.reopen(1) is True
    assert _journaled(tmp_path, grown=2).reopen(2) is False  # built after two requests: nothing to reopen


def test_a_pickled_journal_of_an_older_run_restores(tmp_path):
    import pickle

    journal = _journaled(tmp_path)
    state = journal.__getstate__()
    del state["grown"]
    older = Journaled.__new__(Journaled)
    older.__setstate__(state)
    assert older.grown == 0
    assert pickle.loads(pickle.dumps(journal)).grown == 0
    json.dumps(journal.get_state())  # Ray saves it in a JSON-able state
