"""Every input mistake: one line on stderr naming the input and the fix, exit code 2, nothing created."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO, run_cli


def tree(path: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))}


@pytest.fixture
def workspace(shared_tmp, tiny_data):
    (shared_tmp / "no_splits.yaml").write_text("names: {0: a}\n")
    (shared_tmp / "bad_key.yaml").write_text("nonsense: {uniform: [0, 1]}\n")
    (shared_tmp / "low_high.yaml").write_text("lr0: {uniform: [0.1, 0.01]}\n")
    (shared_tmp / "bad_dist.yaml").write_text("lr0: {gaussian: [0.1, 0.01]}\n")
    (shared_tmp / "a_file").write_text("not a folder\n")
    (shared_tmp / "choice_types.yaml").write_text('lr0: {choice: ["abc", -5]}\n')
    (shared_tmp / "float_batch.yaml").write_text("batch: {uniform: [1, 64]}\n")
    (shared_tmp / "epochs_key.yaml").write_text("epochs: {randint: [1, 10]}\n")
    (shared_tmp / "resume_key.yaml").write_text("resume: {choice: [true, false]}\n")
    (shared_tmp / "huge_randint.yaml").write_text("close_mosaic: {randint: [0, 99999999999999999999]}\n")
    return shared_tmp, tiny_data


CASES = {
    # name: (arguments, words the message must contain)
    "unknown space key": (["--space", "{w}/bad_key.yaml"], "'nonsense' is not an ultralytics training argument"),
    "low >= high": (["--space", "{w}/low_high.yaml"], "lr0' uniform has low 0.1 >= high 0.01"),
    "unknown distribution": (["--space", "{w}/bad_dist.yaml"], "unknown distribution 'gaussian'"),
    "missing space file": (["--space", "{w}/nope.yaml"], "space file {w}/nope.yaml not found"),
    "missing data file": (["data={w}/missing.yaml"], "dataset {w}/missing.yaml not found"),
    "data without train/val": (["data={w}/no_splits.yaml"], "has no 'train' entry"),
    "grace_period > epochs": (["--grace-period", "5", "epochs=3"], "grace_period 5 is larger than epochs 3"),
    "max_samples <= 0": (["--max-samples", "0"], "max_samples must be a whole number from 1 to 100000"),
    "max_samples unbounded": (["--max-samples", "1000000000"], "max_samples must be a whole number from 1 to"),
    "gpu_per_trial above GPUs": (["--gpu-per-trial", "64"], "gpu_per_trial 64.0 is more than the"),
    "missing model file": (["model={w}/missing.pt"], "model file {w}/missing.pt not found"),
    "unwritable storage": (["--storage", "{w}/a_file/runs"], "storage {w}/a_file/runs is not usable"),
    "unknown training argument": (["imgsze=64"], "'imgsze' is not an ultralytics training argument"),
    "badly typed training argument": (["epochs=many"], "epochs must be a whole number"),
    "not key=value": (["epochs30"], "'epochs30' is not key=value"),
    "reserved training argument": (["project=elsewhere"], "'project' is set by hpctune"),
    "name with a newline": (["--name", "a\nb"], "must be a plain folder name"),
    "name too long": (["--name", "n" * 300], "must be a plain folder name of at most 100"),
    "negative seed": (["--seed", "-1"], "seed must be a whole number from 0"),
    "gpu_per_trial nan": (["--gpu-per-trial", "nan"], "gpu_per_trial must be a number >= 0"),
    "cpus_per_trial nan": (["--cpus-per-trial", "nan"], "cpus_per_trial must be a number > 0"),
    "unknown metric": (["--metric", "mAP75"], "metric 'mAP75' is not one of mAP50-95, mAP50, fitness"),
    "unknown space name": (["--space", "yolov5"], "space file yolov5 not found"),
    "epochs given twice": (["--epochs", "20", "epochs=50"], "epochs given twice (20 and epochs=50)"),
    "final top-k above trials": (["--max-samples", "2", "--final-top-k", "3"], "final_top_k 3 is more than the 2"),
    "choice of a wrong type": (["--space", "{w}/choice_types.yaml"], "'lr0=abc' is of invalid type str"),
    "integer argument as a float range": (["--space", "{w}/float_batch.yaml"], "'batch' is a whole number"),
    "epochs as a space key": (["--space", "{w}/epochs_key.yaml"], "'epochs' cannot be searched"),
    "resume as a space key": (["--space", "{w}/resume_key.yaml"], "'resume' cannot be searched"),
    "randint bound past int32": (["--space", "{w}/huge_randint.yaml"], "randint needs whole numbers [low, high) below"),
    "warm start from no run": (["--warm-start", "{w}/nope"], "--warm-start: run directory {w}/nope does not exist"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_tune_input(case, workspace):
    folder, data = workspace
    arguments, words = CASES[case]
    arguments = [a.format(w=folder) for a in arguments]
    if not any(a.startswith("data=") for a in arguments):
        arguments.append(f"data={data}")
    if not any(a == "--storage" for a in arguments):
        arguments += ["--storage", str(folder / "storage")]
    if not any(a.startswith("epochs") for a in arguments):
        arguments.append("epochs=3")
    if "--grace-period" not in arguments:
        arguments += ["--grace-period", "1"]
    before = tree(folder)
    result = run_cli("tune", *arguments)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hpctune: error: ")
    assert words.format(w=folder) in lines[0]
    assert tree(folder) == before, "a failed command must create nothing"


def _new_run(folder: Path, data: Path) -> Path:
    from hpctune.api import create_run
    from hpctune.run.spec import Resources
    from hpctune.yolo.arguments import build_spec

    spec = build_spec(data=str(data), epochs=2, grace_period=1, max_samples=2, storage=str(folder), name="run",
                      resources=Resources(cpus=2, gpus=0))
    return create_run(spec).path


def _bad_resume(run_dir: Path, words: str) -> None:
    before = tree(run_dir) if run_dir.is_dir() else None
    result = run_cli("resume", str(run_dir))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.stderr
    if before is not None:
        assert tree(run_dir) == before


def test_resume_of_a_folder_that_is_no_run(workspace):
    folder, _ = workspace
    (folder / "plain").mkdir()
    _bad_resume(folder / "plain", "is not an hpctune run")
    _bad_resume(folder / "absent", "does not exist")
    assert not (folder / "absent").exists()


def test_resume_of_a_corrupt_manifest(workspace):
    folder, data = workspace
    run_dir = _new_run(folder, data)
    (run_dir / "manifest.json").write_text('{"spec": {"model": ')
    _bad_resume(run_dir, "is corrupt")


def test_resume_of_a_run_another_process_holds(workspace):
    folder, data = workspace
    run_dir = _new_run(folder, data)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from hpctune.run.rundir import RunDir
            with RunDir({str(run_dir)!r}).lock():
                print("held", flush=True)
                time.sleep(120)
        """)], stdout=subprocess.PIPE, text=True, cwd=REPO, env=os.environ.copy(),
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        _bad_resume(run_dir, f"is being driven by pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)


def test_new_run_directory_is_complete_with_the_resolved_optimizer_and_baseline(workspace):
    import json

    folder, data = workspace
    run_dir = _new_run(folder, data)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["format"] == 2 and manifest["spec"]["max_samples"] == 2
    # lr0 searched: optimizer=auto (which would ignore it) resolved as Ultralytics would for this short run
    assert manifest["spec"]["train_args"]["optimizer"] == "AdamW"
    assert manifest["spec"]["baseline"]["lr0"] == round(0.002 * 5 / (4 + 3), 6)  # Ultralytics rounds to 6 places
    assert manifest["versions"]["ultralytics"].startswith("8.4")
    assert (run_dir / "data.yaml").read_text().startswith("path: /")
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no staging folder left behind
