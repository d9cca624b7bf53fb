"""SLURM pure logic: time limits, profiles, settings, sbatch rendering (golden files), the stop
request and the event log. No Slurm, no Ray."""

from __future__ import annotations

import os
import signal
import textwrap
import time
from pathlib import Path

import pytest

from hpctune.engine import interrupt
from hpctune.errors import SpecError
from hpctune.slurm import events
from hpctune.slurm.profiles import load_profile
from hpctune.slurm.queries import gpu_count
from hpctune.slurm.sbatch import node_command, render_standalone, submitit_parameters
from hpctune.slurm.settings import ClusterSettings, check_storage, resolve
from hpctune.slurm.timelimit import format_time, parse_slurm_duration, parse_time

GOLDEN = Path(__file__).parents[1] / "golden"


@pytest.mark.parametrize("text, minutes", [
    ("30", 30), ("90", 90), ("1:30", 2), ("02:00:00", 120), ("1-0", 1440), ("1-02", 1560),
    ("1-02:30", 1590), ("0-00:20:00", 20), ("2-00:00:01", 2881), ("0:59", 1),
])
def test_time_limits_as_sbatch_reads_them(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.parametrize("text", ["", "abc", "1:2:3:4", "-1", "1-", "0", "00:00:00", "1-25:00:00", "1:60:00",
                                  "10:61", "1.5", "1d"])
def test_malformed_time_is_one_spec_error(text):
    with pytest.raises(SpecError, match="--time"):
        parse_time(text)


def test_time_formatting_and_slurm_durations():
    assert format_time(1590) == "1-02:30:00" and format_time(20) == "0-00:20:00"
    assert parse_slurm_duration("1-02:03:04") == 93784 and parse_slurm_duration("5:07") == 307
    assert parse_slurm_duration("UNLIMITED") is None and parse_slurm_duration("INVALID") is None


def test_gpu_counts_from_gres():
    assert gpu_count("gpu:4") == 4 and gpu_count("gpu:a100:4(S:0-1)") == 4
    assert gpu_count("gpu:a100:2,gpu:v100:2") == 4 and gpu_count("(null)") == 0 and gpu_count("mps:100") == 0


def _profiles(tmp_path: Path) -> list[Path]:
    user = tmp_path / "user.yaml"
    user.write_text(textwrap.dedent("""\
        default: big
        profiles:
          big: {partition: gpu, account: proj, qos: normal, setup: ["module load cuda/12"], time: "1-00:00:00"}
          small: {partition: debug}
        """))
    project = tmp_path / "hpctune-profiles.yaml"
    project.write_text("profiles:\n  big: {account: other, sbatch_args: {mail-type: END}}\n")
    return [user, project]


def test_profiles_merge_user_then_project_and_default(tmp_path):
    files = _profiles(tmp_path)
    name, values = load_profile(None, files)
    assert name == "big" and values["partition"] == "gpu" and values["account"] == "other"
    assert values["sbatch_args"] == {"mail-type": "END"}
    assert load_profile("small", files) == ("small", {"partition": "debug"})
    with pytest.raises(SpecError, match="unknown profile 'nope' \\(known: big, small\\)"):
        load_profile("nope", files)
    assert load_profile(None, [tmp_path / "missing.yaml"]) == (None, {})


def test_a_project_file_chooses_no_profile_and_times_must_be_quoted(tmp_path):
    project = tmp_path / "hpctune-profiles.yaml"
    project.write_text("default: evil\nprofiles:\n  evil: {setup: ['curl x | sh']}\n")
    assert load_profile(None, [tmp_path / "user.yaml", project]) == (None, {})  # its default: ignored
    assert load_profile("evil", [tmp_path / "user.yaml", project])[0] == "evil"  # named: used
    user = tmp_path / "user.yaml"
    user.write_text("profiles:\n  p: {time: 12:00:00}\n")  # YAML 1.1 reads it as 43200
    with pytest.raises(SpecError, match="quote it, e.g. time: '12:00:00'"):
        load_profile("p", [user])


def test_command_line_wins_over_profile(tmp_path, monkeypatch):
    files = _profiles(tmp_path)
    monkeypatch.setenv("HPCTUNE_PROFILES", str(files[0]))
    monkeypatch.chdir(tmp_path)
    settings = resolve({"profile": None, "account": "mine", "setup": ("source venv/bin/activate",),
                        "sbatch_args": ("mail-user=a@b.c",), "nodes": 2, "time": "0-02:00:00"})
    assert settings.profile == "big" and settings.partition == "gpu" and settings.account == "mine"
    assert settings.setup == ["module load cuda/12", "source venv/bin/activate"]
    assert settings.sbatch_args == {"mail-type": "END", "mail-user": "a@b.c"}
    assert settings.nodes == 2 and settings.time_min == 120 and settings.max_requeues == 3


@pytest.mark.parametrize("options, words", [
    ({"time": "tomorrow"}, "--time 'tomorrow' is not a Slurm time"),
    ({"time": "5", "signal_delay": 600}, "--signal-delay 600 s is not shorter than --time (5 min)"),
    ({"constraint": "a100\necho INJECTED #"}, "--constraint 'a100\\necho INJECTED #'... must be one printable line"),
    ({"sbatch_args": ("mail-user=a\nb",)}, "must be one printable line"),
    ({"nodes": 0}, "--nodes must be a whole number >= 1"),
    ({"mem": "lots"}, "--mem 'lots' is not a Slurm memory size"),
    ({"sbatch_args": ("nodes=4",)}, "--sbatch-arg nodes is set by hpctune: use --nodes"),
    ({"sbatch_args": ("output=x",)}, "--sbatch-arg output is set by hpctune"),
    ({"sbatch_args": ("Bad Key=1",)}, "is not an sbatch option name"),
    ({"partition": "a b"}, "--partition 'a b' is not a Slurm name"),
    ({"profile": "nope"}, "unknown profile 'nope'"),
])
def test_bad_cluster_options(options, words, tmp_path, monkeypatch):
    monkeypatch.setenv("HPCTUNE_PROFILES", str(tmp_path / "none.yaml"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as info:
        resolve(options)
    assert words in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("path", ["/tmp/runs", "/dev/shm/x", "/var/tmp/runs/a"])
def test_node_local_storage_is_refused(path):
    with pytest.raises(SpecError, match="node-local"):
        check_storage(path)
    check_storage(Path(__file__).parents[2])  # the repository: shared in the tests


def test_setup_lines_run_before_python_in_the_same_shell():
    assert node_command([], "/venv/bin/python") == "/venv/bin/python"
    command = node_command(["module load cuda/12", "export X=1"], "/venv/bin/python")
    assert command == "/bin/bash -c 'module load cuda/12 && export X=1 && exec \"$0\" \"$@\"' /venv/bin/python"


def _settings() -> ClusterSettings:
    return ClusterSettings(
        nodes=3, gpus_per_node=4, cpus_per_node=32, mem="128G", partition="gpu", account="proj", qos="normal",
        time_min=1590, constraint="a100", exclusive=True, setup=["module load cuda/12"],
        sbatch_args={"mail-type": "END"}, max_requeues=3, signal_delay_s=120,
    )


def test_submitit_parameters_one_task_per_node_and_gres():
    params = submitit_parameters(_settings(), "hpctune-demo")
    assert params["nodes"] == 3 and params["ntasks_per_node"] == 1 and params["cpus_per_task"] == 32
    assert params["gres"] == "gpu:4" and params["time"] == 1590 and params["signal_delay_s"] == 120
    assert params["additional_parameters"] == {"requeue": True, "mail-type": "END"}
    assert "gres" not in submitit_parameters(ClusterSettings(cpus_per_node=2, time_min=5), "x")


def test_submitit_script_matches_golden():
    """submitit's own renderer with fixed paths (like submitit's _sbatch_test_record.txt)."""
    from hpctune.slurm.sbatch import render_submitit

    text = render_submitit(_settings(), "hpctune-demo", "/shared/runs/demo/slurm", "/opt/venv/bin/python")
    _compare(text, GOLDEN / "submitit.sbatch")


def test_standalone_script_matches_golden():
    text = render_standalone(_settings(), "hpctune-demo", "/shared/runs/demo", "/opt/venv/bin/python")
    _compare(text, GOLDEN / "standalone.sbatch")


def _compare(text: str, golden: Path) -> None:
    if os.environ.get("HPCTUNE_UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert text == golden.read_text(), f"differs from {golden} (HPCTUNE_UPDATE_GOLDEN=1 rewrites it)"


def test_stop_request_before_tune_runs_is_held_then_handed_to_tune():
    """No exception from the handler (it could land in C++ code); check() raises at a safe point,
    and Tune gets the stop once it listens."""
    calls = []
    stop = interrupt.StopRequest((signal.SIGUSR2,))
    previous = signal.getsignal(signal.SIGUSR2), signal.getsignal(signal.SIGUSR1)
    try:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        stop.install()
        os.kill(os.getpid(), signal.SIGUSR2)
        signal.sigtimedwait([], 0.1)  # let the handler run
        assert stop.pending() and stop.name == "SIGUSR2"
        with pytest.raises(interrupt.JobInterrupted):
            stop.check()
        os.kill(os.getpid(), signal.SIGUSR2)  # a second signal changes nothing
        signal.signal(signal.SIGUSR1, lambda signum, frame: calls.append(signum))  # Tune starts listening
        deadline = time.monotonic() + 5
        while not calls and time.monotonic() < deadline:
            time.sleep(0.05)
        assert calls == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR2, previous[0])
        signal.signal(signal.SIGUSR1, previous[1])


def test_stop_request_hands_the_signal_to_tunes_handler():
    calls = []
    stop = interrupt.StopRequest((signal.SIGUSR2,))
    previous = signal.getsignal(signal.SIGUSR2), signal.getsignal(signal.SIGUSR1)
    try:
        signal.signal(signal.SIGUSR1, lambda signum, frame: calls.append(signum))  # stands for Ray Tune's
        stop.install()
        os.kill(os.getpid(), signal.SIGUSR2)
        signal.sigtimedwait([], 0.1)
        assert calls == [signal.SIGUSR1] and stop.signum == signal.SIGUSR2
    finally:
        signal.signal(signal.SIGUSR2, previous[0])
        signal.signal(signal.SIGUSR1, previous[1])


def test_event_log(tmp_path):
    events.record(tmp_path, "submitted", job="7")
    events.record(tmp_path, "interrupted", job="7", reason="timeout", requeue=True)
    events.record(tmp_path, "interrupted", job="7", reason="preempted", requeue=True)
    events.record(tmp_path, "submitted", job="9")
    entries = events.read(tmp_path)
    assert events.job_ids(entries) == ["7", "9"] and events.requeues(entries, "7", "timeout") == 1
    with open(events.events_file(tmp_path), "a") as f:
        f.write('{"torn": ')
    assert len(events.read(tmp_path)) == 4
