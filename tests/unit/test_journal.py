"""The suggestion journal: a trial id already recorded gets its recorded configuration back, the
searcher adopts it, and the baseline is flagged; real searchers, no Ray cluster."""

from __future__ import annotations

import json

from hpctune.engine.journal import Journaled
from hpctune.engine.searchers import make_searcher
from hpctune.run.journal import baseline_trial, read_journal

SPACE = {"lr0": {"loguniform": [1e-4, 1e-2]}, "mosaic": {"uniform": [0.0, 1.0]}, "imgsz": 64}
BASELINE = {"lr0": 1e-3, "mosaic": 1.0, "imgsz": 64}


def _journaled(path, name="tpe"):
    searcher = make_searcher(name, space=SPACE, metric="m", max_epochs=3, seed=1, baseline=BASELINE)
    return Journaled(searcher, path, BASELINE)


def test_suggestions_are_recorded_first_one_the_baseline(tmp_path):
    path = tmp_path / "suggestions.jsonl"
    journal = _journaled(path)
    configs = [journal.suggest(f"t{i}") for i in range(3)]
    assert configs[0] == BASELINE
    entries = read_journal(path)
    assert [entries[f"t{i}"]["config"] for i in range(3)] == configs
    assert baseline_trial(path) == "t0"
    assert [e["baseline"] for e in entries.values()] == [True, False, False]


def test_a_recorded_trial_gets_its_configuration_back_after_a_restart(tmp_path):
    path = tmp_path / "suggestions.jsonl"
    first = _journaled(path)
    configs = [first.suggest(f"t{i}") for i in range(3)]
    # a driver restarted from an older snapshot: a fresh searcher, asked again for t1 and t2
    again = _journaled(path)
    again.suggest("t0")
    assert again.suggest("t1") == configs[1] and again.suggest("t2") == configs[2]
    assert len(path.read_text().splitlines()) == 3  # nothing recorded twice
    assert set(again.searcher.get_state()["trials"]) == {"t0", "t1", "t2"}  # the searcher adopted them
    fresh = again.suggest("t3")
    assert fresh not in configs


def test_a_torn_last_line_is_suggested_again(tmp_path):
    path = tmp_path / "suggestions.jsonl"
    journal = _journaled(path, "random")
    journal.suggest("t0")
    with open(path, "a") as f:
        f.write(json.dumps({"trial_id": "t1", "config": {"lr0": 1}})[:20])  # a crash mid-write
    assert set(read_journal(path)) == {"t0"}
    config = journal.suggest("t1")  # the next line starts on a line of its own
    assert read_journal(path)["t1"]["config"] == config


def test_epoch_records_survive_a_torn_line(tmp_path):
    from hpctune.run.records import EpochRecords

    records = EpochRecords(tmp_path / "epochs.jsonl")
    records.append({"epoch": 1})
    with open(records.path, "a") as f:
        f.write('{"epoch": 2, "metr')  # a crash (or a full disk) mid-append
    records.append({"epoch": 3})
    assert records.read() == [{"epoch": 1}, {"epoch": 3}]  # the later record is not lost


def test_trial_ids_repeat_after_a_restore_from_an_older_snapshot(tmp_path):
    """A trial created after the last snapshot (an orphan of a driver crash) is created again under
    its own id, with its recorded configuration: nothing suggested twice, its folder found again."""
    path = tmp_path / "suggestions.jsonl"
    first = _journaled(path)
    ids, configs = [], []
    for _ in range(2):
        ids.append(first.next_trial_id())
        configs.append(first.suggest(ids[-1]))
    snapshot = first.get_state()  # Ray's snapshot holds the count here...
    ids.append(first.next_trial_id())
    configs.append(first.suggest(ids[-1]))  # ...and this trial starts after it; then the driver dies
    again = _journaled(path)
    again.token = first.token  # the token is pickled into tuner.pkl with the searcher
    again.set_state(snapshot)
    assert again.next_trial_id() == ids[2]
    assert again.suggest(ids[2]) == configs[2]
    assert len(read_journal(path)) == 3


def test_trial_id_patch_is_scoped():
    from ray.tune.experiment import Trial

    from hpctune import ray_compat

    before = Trial.generate_id()
    with ray_compat.tuner_patches(adaptive_period=False, reuse_guard=False, trial_ids=lambda: "abcde_00007"):
        assert Trial.generate_id() == "abcde_00007"
    after = Trial.generate_id()
    assert len(before) == len(after) == 8 and after != "abcde_00007"
