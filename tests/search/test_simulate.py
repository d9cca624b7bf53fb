"""Simulation mode (hpctune.testing.simulate): stand-in trials through the real search.run on fake GPUs.

Correctness only, no timings: every trial ends completed or stopped, ASHA decides, records are
complete, and a driver killed mid-search resumes with the adaptive snapshot policy without training
an epoch twice or creating a trial twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import REPO, read_records

from hpctune.engine import scale
from hpctune.testing import simulate

EPOCHS, GRACE, RF, SLOTS = 9, 1, 3, 8


def _run_in_process(run_dir: Path):
    from hpctune.engine import driver as search

    return search.run(run_dir)


def _check_records(run_dir: Path, records: dict[str, list[dict]]) -> None:
    """One record per epoch trained, epochs 1..n in order, a final record only when all epochs ran."""
    for trial, rs in records.items():
        trained = [r["epoch"] for r in rs if not r.get("final")]
        assert trained == list(range(1, len(trained) + 1)), (trial, trained)
        assert all(len(r["busy"]) == 2 and r["busy"][0] <= r["busy"][1] for r in rs if not r.get("final"))
        finals = [r for r in rs if r.get("final")]
        assert len(finals) <= 1 and (not finals or trained[-1] == EPOCHS), (trial, trained, finals)


def test_model_is_deterministic_and_depends_on_the_config():
    sim = simulate.settings()
    config = {"lr0": 0.01, "momentum": 0.9, "weight_decay": 0.0005, "box": 0.05}
    a = simulate.Model(config, simulate.SPACE, 0, sim)
    b = simulate.Model(dict(config), simulate.SPACE, 0, sim)
    assert [a.epoch_seconds(e) for e in (1, 2)] == [b.epoch_seconds(e) for e in (1, 2)]
    assert a.metrics(3) == b.metrics(3) and set(a.metrics(3)) >= {simulate.METRIC, "val/box_loss"}
    other = simulate.Model({**config, "lr0": 1e-5}, simulate.SPACE, 0, sim)
    assert other.metrics(9)[simulate.METRIC] != a.metrics(9)[simulate.METRIC]
    assert 0.5 < a.epoch_seconds(1) / sim["epoch_s"] < 2
    with pytest.raises(ValueError, match="unknown simulation setting"):
        simulate.settings(epoch_seconds=1)


def test_prune_stale_states_keeps_the_newest_session(tmp_path):
    old, new = "2026-01-01_00-00-00", "2026-01-02_00-00-00"
    names = [f"experiment_state-{old}.json", f"basic-variant-state-{old}.json", f"callback-states-{old}.pkl",
             f"experiment_state-{new}.json", f"basic-variant-state-{new}.json", "tuner.pkl"]
    for name in names:
        (tmp_path / name).write_text("{}")
    removed = scale.prune_stale_states(tmp_path)
    assert sorted(removed) == sorted(names[:3])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[3:])


def test_simulated_search_goes_through_search_asha_and_records(shared_tmp):
    rundir = simulate.create_run(name="sim", storage=shared_tmp, trials=30, epochs=EPOCHS, grace_period=GRACE,
                                 reduction_factor=RF, seed=3, epoch_s=0.05, gpus_per_node=SLOTS)
    result = _run_in_process(rundir.path)

    assert result.finished and len(result.table) == 30
    states = [row["state"] for row in result.table]
    assert set(states) <= {"completed", "stopped"}, states
    assert "stopped" in states and "completed" in states, states
    records = read_records(rundir.path)
    assert len(records) == 30
    _check_records(rundir.path, records)
    for row in result.table:
        trained = [r["epoch"] for r in records[row["trial_id"]] if not r.get("final")]
        assert row["epochs"] == len(trained)
        assert any(r.get("final") for r in records[row["trial_id"]]) == (row["state"] == "completed")
        # Ray's JSON result log: one line per report (every epoch, the last through the final record)
        reported = [json.loads(line)["epoch"] for line in
                    (rundir.experiment / row["trial_id"] / "result.json").read_text().splitlines()]
        assert reported == trained, (row["trial_id"], reported, trained)
        assert records[row["trial_id"]][0]["cuda_visible_devices"] not in (None, "")  # a fake GPU each

    # ASHA decided at its rungs (epochs 1 and 3): every trial was ranked at the first one.
    rungs = {rung["milestone"]: rung["recorded"] for rung in json.loads(rundir.asha_rungs.read_text())}
    assert set(rungs[1]) == {row["trial_id"] for row in result.table}
    assert 0 < len(rungs[3]) < 30
    stopped = [row for row in result.table if row["state"] == "stopped"]
    assert all(row["epochs"] in (1, 3) for row in stopped), stopped

    # Finished trials are kept small in Ray's snapshot (a canary for the Ray internals scale.py trims).
    state = json.loads(max(rundir.experiment.glob("experiment_state-*.json")).read_text())
    for _, metadata in state["trial_data"]:
        meta = json.loads(metadata)
        assert not any(meta["metric_n_steps"].values()), "running averages were kept"
        assert set(meta["metric_analysis"]) <= {simulate.METRIC, "epoch", "training_iteration"}


DRIVER = """
import sys
from hpctune.engine import driver as search
search.run(sys.argv[1])
"""


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the driver and every process of its session (its private Ray: Ray makes each worker a process
    group leader, so killing the driver's group alone left workers running), and wait until all are gone: a
    trial process left alive wrote an epoch after the test had read the records."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
    deadline = time.monotonic() + 60
    while (members := _session_members(process.pid)) and time.monotonic() < deadline:
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    assert not _session_members(process.pid), "processes of the killed search outlived SIGKILL"


def _session_members(sid: int) -> list[int]:
    """The live processes of a session (a zombie can write nothing: it counts as gone)."""
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getsid(proc.pid) == sid:
                members.append(proc.pid)
        except ProcessLookupError:  # ended while being looked at
            continue
    return members


def test_killed_simulated_search_resumes_without_training_twice(shared_tmp):
    rundir = simulate.create_run(name="killed", storage=shared_tmp, trials=30, epochs=EPOCHS, grace_period=GRACE,
                                 reduction_factor=RF, seed=4, epoch_s=0.4, gpus_per_node=4)
    env = {**os.environ, "HPCTUNE_PROGRESS": "off", "PYTHONPATH": str(REPO)}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(rundir.path)], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and driver.poll() is None:
            records = read_records(rundir.path) if rundir.trials.exists() else {}
            finished = [t for t, rs in records.items() if any(r.get("final") for r in rs)]
            if finished and len(records) >= 12:
                break
            time.sleep(0.3)
        assert driver.poll() is None, "the search ended before it could be interrupted"
    finally:
        _kill_group(driver)
    before = read_records(rundir.path)
    rungs_before = json.loads(rundir.asha_rungs.read_text())

    result = _run_in_process(rundir.path)
    after = read_records(rundir.path)

    assert result.finished and len(result.table) == 30
    assert set(after) == {row["trial_id"] for row in result.table}, "a trial was created twice"
    assert set(row["state"] for row in result.table) <= {"completed", "stopped"}
    _check_records(rundir.path, after)  # epochs 1..n once each: nothing trained twice
    for trial, rs in before.items():
        assert after[trial][: len(rs)] == rs, "records are append-only"
        if any(r.get("final") for r in rs):
            assert after[trial] == rs, f"finished trial {trial} ran again"
    rungs_after = {rung["milestone"]: rung["recorded"] for rung in json.loads(rundir.asha_rungs.read_text())}
    for rung in rungs_before:
        for trial, value in rung["recorded"].items():
            assert rungs_after[rung["milestone"]].get(trial) == value, (rung["milestone"], trial)
    manifest = json.loads(rundir.manifest.read_text())
    assert len(manifest["sessions"]) == 2
