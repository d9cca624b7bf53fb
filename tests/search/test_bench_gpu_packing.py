"""scripts/bench_gpu_packing.py: its figures (pure functions) and one smoke run on a fake GPU."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "bench_gpu_packing.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_gpu_packing", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load()


def test_slots_and_cpus_per_trial_share_the_machine():
    assert [bench.slots(1, p) for p in (1.0, 0.5, 0.25, 0.3)] == [1, 2, 4, 3]
    assert bench.slots(2, 0.5) == 4
    assert [bench.cpus_per_trial(16, 1, p) for p in (1.0, 0.5, 0.25)] == [16, 8, 4]
    assert bench.cpus_per_trial(2, 1, 0.25) == 1  # never below one


def test_rates_and_ratios():
    assert bench.per_hour(8, 1800) == 16.0
    assert bench.per_hour(8, 0) is None
    assert bench.ratio(48.0, 16.0) == 3.0
    assert bench.ratio(None, 16.0) is None and bench.ratio(48.0, None) is None and bench.ratio(1.0, 0.0) is None


def test_packing_row_counts_only_completed_trials_with_every_epoch():
    table = [{"state": "completed", "epochs": 2}, {"state": "completed", "epochs": 2},
             {"state": "errored", "epochs": 1}, {"state": "stopped", "epochs": 1}]
    row = bench.packing_row(gpu_per_trial=0.25, gpus=1, cpus=16, wall_s=360.0, table=table, epochs=2, trials=4)
    assert row["trials_finished"] == 2 and row["epochs_trained"] == 6
    assert row["trials_per_hour"] == 20.0 and row["epochs_per_hour"] == 60.0
    assert row["concurrent_trials"] == 4 and row["cpus_per_trial"] == 4


def test_ratios_against_one_trial_per_gpu_and_the_target():
    rows = [{"gpu_per_trial": 1.0, "trials_per_hour": 10.0}, {"gpu_per_trial": 0.5, "trials_per_hour": 19.0},
            {"gpu_per_trial": 0.25, "trials_per_hour": 31.0}, {"gpu_per_trial": 0.2, "error": "boom"}]
    bench.add_ratios(rows)
    assert [r["ratio_vs_1"] for r in rows] == [1.0, 1.9, 3.1, None]
    assert [r["meets_target"] for r in rows] == [None, False, True, None]
    alone = [{"gpu_per_trial": 0.5, "trials_per_hour": 19.0}]  # no base in this run
    bench.add_ratios(alone)
    assert alone[0]["ratio_vs_1"] is None and alone[0]["meets_target"] is None


def test_parse_nvidia_smi_lines():
    assert bench.parse_compute_apps("1234, 812\n5678, 1510\n\n") == [(1234, 812.0), (5678, 1510.0)]
    assert bench.parse_compute_apps("No running processes found\n1, [N/A]\n") == []
    assert bench.parse_gpu_query("37, 4021\n") == [(37.0, 4021.0)]
    assert bench.parse_gpu_query("[N/A], 100\n0, 5\n") == [(None, 100.0), (0.0, 5.0)]
    assert bench.parse_gpu_query("garbage\n") == []


def test_peak_memory_per_process_and_over_trials():
    polls = [[(10, 500.0), (11, 300.0)], [(10, 900.0), (11, 250.0), (99, 40.0)], [], [(11, 700.0), (11, 100.0)]]
    peaks = bench.peak_per_pid(polls)
    assert peaks == {10: 900.0, 11: 800.0, 99: 40.0}  # a process on two GPUs counts their sum
    mem = bench.trial_memory(peaks, trial_pids=[10, 11, 12])
    assert mem["matched"] and mem["processes"] == 2 and mem["mean"] == 850.0 and mem["max"] == 900.0
    # nvidia-smi in another pid namespace: every process it shows, less the driver's own
    other = bench.trial_memory(peaks, trial_pids=[1, 2], exclude=[99])
    assert not other["matched"] and other["processes"] == 2 and other["max"] == 900.0
    nothing = bench.trial_memory({}, trial_pids=[1])
    assert nothing["mean"] is None and nothing["max"] is None


def test_gpu_summary():
    polls = [[(10.0, 1000.0)], [(90.0, 5000.0)], [(None, 3000.0)], [(50.0, None)]]
    summary = bench.gpu_summary(polls, idle=[(0.0, 600.0)])
    assert summary["peak_memory_used_mib"] == 5000.0 and summary["idle_memory_used_mib"] == 600.0
    assert summary["mean_utilization_pct"] == 50.0 and summary["peak_utilization_pct"] == 90.0
    assert summary["polls"] == 4
    two_gpus = bench.gpu_summary([[(20.0, 100.0), (40.0, 300.0)]])
    assert two_gpus["peak_memory_used_mib"] == 400.0 and two_gpus["mean_utilization_pct"] == 30.0
    empty = bench.gpu_summary([], None)
    assert empty["peak_memory_used_mib"] is None and empty["mean_utilization_pct"] is None


def test_trial_records_summary():
    records = {
        "a": [{"epoch": 1, "time": 100.0, "pid": 7, "cuda_visible_devices": "0"},
              {"epoch": 2, "time": 110.0, "pid": 7, "cuda_visible_devices": "0"},
              {"epoch": 2, "final": True, "time": 112.0, "pid": 7, "cuda_visible_devices": "0"}],
        "b": [{"epoch": 1, "time": 105.0, "pid": 8, "cuda_visible_devices": "0"},
              {"epoch": 2, "time": 119.0, "pid": 8, "cuda_visible_devices": "0"}],
    }
    summary = bench.trial_records_summary(records)
    assert summary == {"pids": [7, 8], "cuda_visible_devices": ["0"], "mean_epoch_s": 12.0}
    assert bench.trial_records_summary({"a": records["a"][:1]})["mean_epoch_s"] is None


def test_preflight_says_what_is_missing_in_one_line():
    def importer(name):
        if name == "ray":
            raise ModuleNotFoundError("No module named 'ray'")
        return object()

    missing = bench.missing_modules(["ray", "yaml"], importer)
    assert missing == ["ray (No module named 'ray')"]
    error = bench.preflight_error(missing, cuda=True, smoke=False)
    assert "cannot import ray" in error and "\n" not in error
    assert "no CUDA GPU" in bench.preflight_error([], cuda=False, smoke=False)
    assert bench.preflight_error([], cuda=False, smoke=True) is None
    assert bench.preflight_error([], cuda=True, smoke=False) is None


def test_format_table_has_a_line_per_packing():
    rows = [{"gpu_per_trial": 1.0, "concurrent_trials": 1, "cpus_per_trial": 16, "trials_finished": 8,
             "trials_asked": 8, "wall_s": 200.0, "trials_per_hour": 144.0, "epochs_per_hour": 288.0,
             "ratio_vs_1": 1.0, "mean_epoch_s": 9.5, "trial_memory_mib": {"mean": 2100.0, "max": 2300.0},
             "gpu": {"peak_memory_used_mib": 2900.0, "mean_utilization_pct": 35.0}},
            {"gpu_per_trial": 0.5, "error": "SpecError: boom"}]
    lines = bench.format_table(rows).splitlines()
    assert len(lines) == 3 and "144.0" in lines[1] and "2100" in lines[1] and "failed: SpecError" in lines[2]


def test_smoke_run_on_a_fake_gpu(tmp_path):
    """The whole benchmark: real hpctune searches (tiny YOLO on the CPU) at gpu_per_trial 1 and 0.5."""
    out = tmp_path / "gpu_packing.json"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--storage", str(tmp_path / "storage"), "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RAY_"))},
    )
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    figures = json.loads(out.read_text())
    assert figures["smoke"] and figures["machine"]["gpus"] == 1
    rows = figures["rows"]
    assert [r["gpu_per_trial"] for r in rows] == [1.0, 0.5]
    for row in rows:
        assert row["trials_finished"] == row["trials_asked"] == 2, row
        assert row["epochs_trained"] == 2 and row["trials_per_hour"] > 0 and row["epochs_per_hour"] > 0
        assert 0 < row["wall_s"] < time.monotonic() - started
        assert row["cuda_visible_devices"] == ["0"]  # Ray handed out the fake GPU
        if figures["machine"]["nvidia_smi"] is None:
            assert row["trial_memory_mib"]["mean"] is None and row["gpu"]["peak_memory_used_mib"] is None
    assert [r["concurrent_trials"] for r in rows] == [1, 2]
    # the same configurations at every packing, suggested by the random searcher, the baseline first
    suggested = [sorted((json.loads(line) for line in (Path(r["run_dir"]) / "suggestions.jsonl").read_text()
                         .splitlines()), key=lambda e: e["n"]) for r in rows]
    assert [[e["config"] for e in run] for run in suggested] == [[e["config"] for e in suggested[0]]] * len(rows)
    assert [e["baseline"] for e in suggested[0]] == [True, False]
    assert rows[0]["ratio_vs_1"] == 1.0 and rows[1]["ratio_vs_1"] > 0
    assert "trials/h" in result.stdout


@pytest.mark.parametrize("argv", [["--packings", "0"], ["--trials", "0"]])
def test_bad_arguments_exit_2(argv):
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(argv)
    assert exc.value.code == 2
