"""Preemption safety on the local Slurm cluster: a search preempted twice by a high-priority job,
and a job requeued by its own time limit, both completing.

A lost epoch is one that was in flight: every epoch a trial records is recorded once, and a
resumed trial continues at the epoch after its last record. (A lost worker node, scancel and
`resume --submit` are in test_slurm_submit.py.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from slurm_helpers import (
    SPACE,
    assert_clean_end,
    assert_completed_search,
    cluster_env,
    events,
    finished,
    hpctune,
    job_logs,
    kill_ray_node,
    read_records,
    sh,
    slurm,
    submitted_job,
    wait_for,
    wait_job_done,
)

pytestmark = [pytest.mark.slurm, slurm]


@pytest.fixture
def env():
    return cluster_env()


def _submit(env, shared_tmp: Path, data: Path, name: str, *args: str) -> tuple[str, Path]:
    space = shared_tmp / "space.yaml"
    space.write_text(SPACE)
    out = hpctune("submit", "model=yolov8n.yaml", f"data={data}", "imgsz=64", "batch=16", "--space", str(space),
                  "--storage", str(shared_tmp), "--name", name, "--cpus-per-node", "1", *args, env=env)
    return submitted_job(out), shared_tmp / name


def _started(run_dir: Path, restart: int) -> dict | None:
    return next((e for e in events(run_dir) if e["event"] == "started" and e["restart"] == restart), None)


def assert_at_most_the_epoch_in_flight_lost(run_dir: Path) -> dict[str, list[int]]:
    """No epoch trained twice; each session continues a trial at the epoch after its last record."""
    epochs = {}
    for trial, records in read_records(run_dir).items():
        trained = [r["epoch"] for r in records if not r.get("final")]
        assert trained == sorted(set(trained)), f"trial {trial} trained an epoch twice: {trained}"
        assert trained == list(range(1, len(trained) + 1)), f"trial {trial} skipped an epoch: {trained}"
        epochs[trial] = [r["session"] for r in records if not r.get("final")]
    return epochs


def assert_in_flight_matches_records(run_dir: Path) -> None:
    """What `status` reports as lost: for each interrupted trial, the epoch after its last record."""
    records = read_records(run_dir)
    for e in (e for e in events(run_dir) if e["event"] == "interrupted"):
        for trial, epoch in e["in_flight"].items():
            done = [r["epoch"] for r in records[trial] if r["time"] <= e["time"]] if trial in records else []
            assert epoch == max(done, default=0) + 1, (trial, epoch, done)


def _preempt(env, node: str, seconds: int) -> str:
    """A high-priority job on `node` alone: Slurm requeues whatever low-priority job runs there."""
    out = sh(["sbatch", "--parsable", "-p", env["HPCTUNE_SLURM_HIGH_PARTITION"], "-N1", f"-w{node}", "--exclusive",
              "-o", "/dev/null", "--job-name=hpctune-test-preemptor", "--wrap", f"sleep {seconds}"], env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split(";")[0]


def test_preempted_twice_by_a_high_priority_job_completes(env, shared_tmp, tiny_data):
    # Enough work (8 trials, 2 epochs each before ASHA's first rung, 4 for the kept half) that both
    # preemptions land mid-search: tiny-data epochs take about a second.
    job, run_dir = _submit(env, shared_tmp, tiny_data, "preempted", "epochs=4", "--max-samples", "8",
                           "--grace-period", "2", "--reduction-factor", "2", "--nodes", "2",
                           "--time", "0-00:30:00")  # > 10 min: submitit tells preemption from timeout
    preemptors = []
    for restart in (0, 1):
        start = wait_for(lambda r=restart: _started(run_dir, r), 300, f"start {restart}")

        def trained_here(session=restart + 1):
            records = read_records(run_dir)
            mine = [r for rs in records.values() for r in rs if r["session"] == session and not r.get("final")]
            return mine and not all(finished(rs) for rs in records.values())
        wait_for(trained_here, 300, f"an epoch trained in run {restart}")
        # Block the head's node: the requeued job must come back elsewhere (other IPs, other head).
        preemptors.append(_preempt(env, start["nodes"][0], 45))
        wait_for(lambda r=restart: _started(run_dir, r + 1), 300, f"the restart after preemption {restart + 1}")
    runs = wait_job_done(env, job, 500, run_dir)
    logs = job_logs(run_dir, job)
    assert runs[-1]["State"] == "COMPLETED", logs
    assert len(runs) == 3 and all(r["State"] in {"PREEMPTED", "REQUEUED"} for r in runs[:2]), runs
    assert_completed_search(run_dir, 8)
    assert_clean_end(env, job, run_dir)

    starts = [e for e in events(run_dir) if e["event"] == "started"]
    assert [e["restart"] for e in starts] == [0, 1, 2], starts  # SLURM_RESTART_COUNT 0, 1 and 2
    stops = [e for e in events(run_dir) if e["event"] == "interrupted"]
    assert [(e["signal"], e["reason"], e["requeue"]) for e in stops] == [("SIGUSR2", "preempted", True)] * 2
    heads = [e["head"].split(":")[0] for e in starts]
    assert heads[0] != heads[1] != heads[2], f"each restart had another head: {heads}"
    sessions = assert_at_most_the_epoch_in_flight_lost(run_dir)
    assert_in_flight_matches_records(run_dir)
    assert any(len(set(s)) > 1 for s in sessions.values()), f"no trial continued across a preemption: {sessions}"
    state = "".join(p.read_text() for p in (run_dir / "tune").glob("experiment_state-*.json"))
    assert not re.search(r'"node:\d', state), "a trial is pinned to a node of an old allocation (ray 28468)"

    text = hpctune("status", str(run_dir), env=env).stdout
    assert "interruptions: 2" in text and text.count("SIGUSR2 preempted, requeued") == 2, text
    assert "resumes: 2" in text and "continued; the first finished an epoch" in text, text
    print(text)


def test_time_limit_requeues_until_the_search_is_done_even_when_the_stop_hangs(env, shared_tmp):
    """A job with a 2-minute --time (USR2 10 s before the end) is requeued by its own time limit and
    the search completes, although a driver callback hangs at every stop (a stuck W&B upload): the stop's
    deadline (5 s in a 10 s lead) records the interruption and requeues in time. Simulated trials
    (hpctune.testing.simulate: epochs are sleeps of a few seconds) make the search's length, and so the
    timeouts, predictable on this busy machine."""
    from hpctune.api import create_run
    from hpctune.jobs import submit as jobs
    from hpctune.slurm.settings import ClusterSettings, check_with_cluster
    from hpctune.testing import simulate

    # Slurm sends --signal 0-30 s before it is due (it checks every 30 s): USR2 80-110 s into each
    # run. 15 epochs of 8 s (120 s, the whole time limit) outlast the first run even on an idle machine.
    spec = simulate.make_spec(name="timeout", storage=shared_tmp, trials=4, epochs=15, grace_period=15,
                              epoch_s=8.0, trial_spread=0.0, epoch_jitter=0.0, stop_hang_s=600.0)
    settings = ClusterSettings(nodes=2, gpus_per_node=2, cpus_per_node=2, time_min=2, signal_delay_s=10,
                               max_requeues=5)
    spec.cluster = check_with_cluster(settings).to_dict()
    run_dir = create_run(spec).path
    job = jobs.submit(run_dir)
    runs = wait_job_done(env, job, 900, run_dir)
    assert runs[-1]["State"] == "COMPLETED", job_logs(run_dir, job)
    assert_completed_search(run_dir, 4)
    # each interrupted run is killed by its own requeue while its stop hangs: its node-local temp dir may be
    # left until a later job's sweep (as for any killed job)
    assert_clean_end(env, job, run_dir, killed=True)
    stops = [e for e in events(run_dir) if e["event"] == "interrupted"]
    assert stops and all((e["reason"], e["requeue"]) == ("timeout", True) for e in stops), stops
    assert [r["State"] for r in runs] == ["REQUEUED"] * len(stops) + ["COMPLETED"], runs
    starts = [e["restart"] for e in events(run_dir) if e["event"] == "started"]
    assert starts == list(range(len(stops) + 1)), starts
    assert_at_most_the_epoch_in_flight_lost(run_dir)
    assert_in_flight_matches_records(run_dir)
    assert all(e.get("overrun") for e in stops), f"a stop that hung was not cut short by its deadline: {stops}"
    print(f"timeouts: {len(stops)}; runs: {[r['State'] for r in runs]}")


def _final_records(run_dir: Path) -> dict[str, list[dict]]:
    return read_records(run_dir / "final")  # final/trials/<id>/epochs.jsonl


def test_preempted_during_the_final_training_resumes_it_without_retraining(env, shared_tmp, tiny_data):
    """A 2-node search with --final-epochs, preempted once while the winner trains at full length: the
    requeued job goes on with the final training where it stopped; its weights and metric land in the
    run directory, `hpctune best` and the report."""
    final_epochs = 20  # tiny-data epochs take about a second: room for the preemption to land mid-way
    job, run_dir = _submit(env, shared_tmp, tiny_data, "final-preempted", "epochs=2", "--max-samples", "2",
                           "--grace-period", "1", "--nodes", "2", "--final-epochs", str(final_epochs),
                           "--time", "0-00:30:00")
    start = wait_for(lambda: _started(run_dir, 0), 300, "the job's start")

    def mid_final():
        return any(1 <= len([r for r in rs if not r.get("final")]) <= final_epochs - 12
                   for rs in _final_records(run_dir).values())
    wait_for(mid_final, 600, "the final training mid-way")
    _preempt(env, start["nodes"][0], 30)
    wait_for(lambda: _started(run_dir, 1), 300, "the restart after the preemption")
    runs = wait_job_done(env, job, 600, run_dir)
    assert runs[-1]["State"] == "COMPLETED" and len(runs) == 2, (runs, job_logs(run_dir, job))

    (trial, records), = _final_records(run_dir).items()
    trained = [r["epoch"] for r in records if not r.get("final")]
    assert trained == list(range(1, final_epochs + 1)), f"final training epochs {trained}: one retrained or skipped"
    assert {r["session"] for r in records if not r.get("final")} == {1, 2}, "it did not continue across the stop"
    assert records[-1].get("final")
    info = assert_completed_search(run_dir, 2)
    assert info["final"][0]["state"] == "completed" and Path(info["final_weights"]).is_file(), info
    stops = [e for e in events(run_dir) if e["event"] == "interrupted"]
    assert [(e["reason"], e["requeue"]) for e in stops] == [("preempted", True)], stops

    best = hpctune("best", str(run_dir), env=env)
    assert best.returncode == 0 and f"final training ({final_epochs} epochs)" in best.stdout, best.stdout
    report = hpctune("report", str(run_dir), env=env)
    assert report.returncode == 0, report.stderr
    page = (run_dir / "report" / "index.html").read_text()
    assert f"final training (trial {trial}), {final_epochs} epochs" in page


@pytest.fixture
def term_only_preemption(env):
    """The cluster preempts as stock Slurm does: PreemptMode=REQUEUE without preempt_send_user_signal, so a
    preempted job gets SIGTERM (then SIGKILL after GraceTime), not its --signal. Restored afterwards."""
    conf = Path(env["SLURM_CONF"])
    original = conf.read_text()
    assert "SlurmctldParameters=preempt_send_user_signal\n" in original
    conf.write_text(original.replace("SlurmctldParameters=preempt_send_user_signal\n", ""))
    try:
        assert sh(["scontrol", "reconfigure"], env).returncode == 0
        yield
    finally:
        conf.write_text(original)
        sh(["scontrol", "reconfigure"], env)


def test_a_preemption_by_sigterm_alone_is_recognised_and_resumed(env, shared_tmp, tiny_data, term_only_preemption):
    job, run_dir = _submit(env, shared_tmp, tiny_data, "term-preempted", "epochs=4", "--max-samples", "4",
                           "--grace-period", "2", "--reduction-factor", "2", "--nodes", "1", "--time", "0-00:30:00")
    start = wait_for(lambda: _started(run_dir, 0), 300, "the job's start")

    def mid_search():
        records = read_records(run_dir)
        return any(not r.get("final") for rs in records.values() for r in rs) and not (
            len(records) == 4 and all(finished(rs) for rs in records.values()))
    wait_for(mid_search, 300, "an epoch trained, the search not done")
    _preempt(env, start["nodes"][0], 20)
    wait_for(lambda: _started(run_dir, 1), 300, "the restart after the preemption")
    runs = wait_job_done(env, job, 500, run_dir)
    assert runs[-1]["State"] == "COMPLETED", (runs, job_logs(run_dir, job))
    assert_completed_search(run_dir, 4)
    assert_at_most_the_epoch_in_flight_lost(run_dir)
    stops = [e for e in events(run_dir) if e["event"] == "interrupted"]
    assert [(e["signal"], e["reason"], e["requeue"]) for e in stops] == [("SIGTERM", "preempted", True)], stops


def test_a_lost_ray_head_requeues_the_job_and_the_search_completes(env, shared_tmp):
    """Every Ray process of the head node SIGKILLed mid-search (its GCS with them): the driver, a child of
    rank 0, is ended; rank 0 records the loss and requeues the job, which completes the search with no epoch
    trained twice. Simulated trials: epochs are 2 s sleeps."""
    from hpctune.api import create_run
    from hpctune.jobs import submit as jobs
    from hpctune.slurm.settings import ClusterSettings, check_with_cluster
    from hpctune.testing import simulate

    spec = simulate.make_spec(name="head-lost", storage=shared_tmp, trials=4, epochs=8, grace_period=8,
                              epoch_s=2.0, trial_spread=0.0, epoch_jitter=0.0)
    settings = ClusterSettings(nodes=2, gpus_per_node=2, cpus_per_node=2, time_min=30, max_requeues=1)
    spec.cluster = check_with_cluster(settings).to_dict()
    run_dir = create_run(spec).path
    job = jobs.submit(run_dir)
    wait_for(lambda: _started(run_dir, 0), 300, "the job's start")
    wait_for(lambda: any(len(rs) >= 2 for rs in read_records(run_dir).values()), 300, "two epochs of a trial")
    kill_ray_node(job, 0)
    wait_for(lambda: _started(run_dir, 1), 300, "the restart after the head was lost")
    runs = wait_job_done(env, job, 600, run_dir)
    assert runs[-1]["State"] == "COMPLETED" and len(runs) == 2, (runs, job_logs(run_dir, job))
    assert_completed_search(run_dir, 4)
    assert_clean_end(env, job, run_dir, killed=True)
    stops = [e for e in events(run_dir) if e["event"] == "interrupted"]
    assert [(e["reason"], e["requeue"]) for e in stops] == [("head-lost", True)], stops
    assert not [e for e in events(run_dir) if e["event"] == "failed"]
    sessions = assert_at_most_the_epoch_in_flight_lost(run_dir)
    assert_in_flight_matches_records(run_dir)
    assert any(len(set(s)) > 1 for s in sessions.values()), f"no trial continued after the loss: {sessions}"
    text = hpctune("status", str(run_dir), env=env).stdout
    assert "interruptions: 1" in text and "head-lost, requeued" in text, text
