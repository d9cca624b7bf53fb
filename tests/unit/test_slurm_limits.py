"""What a job asks of a partition (hpctune.slurm.limits, settings.fit_to_partition): GPUs required on
GPU partitions, CPUs and memory in proportion to the GPUs, the partition's DefaultTime and MaxTime,
typed GPUs, --exclusive/--no-exclusive. Partitions are parsed from sinfo text: no Slurm runs."""

from __future__ import annotations

import logging

import click
import pytest
from click.testing import CliRunner

from hpctune.cli.slurm import _no_slurm_notice, cluster_options
from hpctune.errors import ClusterError, SpecError
from hpctune.slurm import limits
from hpctune.slurm.queries import Partition, gpu_types, parse_partitions
from hpctune.slurm.sbatch import render_standalone, submitit_parameters
from hpctune.slurm.settings import ClusterSettings, assume_without_cluster, fit_to_partition, resolve

# `sinfo -h -a -N -o %P|%N|%c|%G|%a|%l|%L|%m`: 4 GPUs, 64 CPUs and 256000 MB per node; a CPU partition.
SINFO = """\
gpu*|g1|64|gpu:a100:4(S:0-1)|up|2-00:00:00|02:00:00|256000
gpu*|g2|64|gpu:a100:4(S:0-1)|up|2-00:00:00|02:00:00|256000
cpu|c1|128|(null)|up|infinite|n/a|512000
mixed|m1|48|gpu:v100:2,gpu:a100:1|up|1-00:00:00|n/a|1
"""


@pytest.fixture
def parts() -> dict[str, Partition]:
    return parse_partitions(SINFO)


@pytest.fixture(autouse=True)
def no_profiles(tmp_path, monkeypatch):
    monkeypatch.setenv("HPCTUNE_PROFILES", str(tmp_path / "none.yaml"))
    monkeypatch.chdir(tmp_path)


def fit(part: Partition, **options) -> ClusterSettings:
    return fit_to_partition(resolve(options), part)


def test_sinfo_lines_become_partitions_with_node_shapes(parts):
    gpu = parts["gpu"]
    assert gpu.default and gpu.nodes == 2 and gpu.gpus_per_node == 4 and gpu.cpus_per_node == 64
    assert len(gpu.shapes) == 1 and gpu.shapes[0].mem_mb == 256000 and gpu.gpu_types() == ["a100"]
    assert (gpu.time_limit, gpu.default_time) == ("2-00:00:00", "02:00:00")
    assert parts["cpu"].gpus_per_node == 0 and parts["mixed"].gpu_types() == ["a100", "v100"]
    assert gpu_types("gpu:a100:2(S:0),gpu:v100:2") == (("a100", 2), ("v100", 2)) and gpu_types("gpu:4") == ((None, 4),)


def test_one_of_four_gpus_asks_for_a_quarter_of_cpus_and_memory(parts, caplog):
    with caplog.at_level(logging.INFO, logger="hpctune"):
        settings = fit(parts["gpu"], gpus_per_node=1)
    assert (settings.cpus_per_node, settings.mem) == (16, "64000M")
    assert "asking for 16 CPUs and 64000M memory per node" in caplog.text
    params = submitit_parameters(settings, "x")
    assert params["cpus_per_task"] == 16 and params["mem"] == "64000M" and params["gres"] == "gpu:1"
    assert (fit(parts["gpu"], gpus_per_node=3).cpus_per_node, fit(parts["gpu"], gpus_per_node=4).cpus_per_node) == (
        48, 64)


def test_shares_round_down_and_are_at_least_one_cpu():
    part = parse_partitions("p*|n1|10|gpu:3|up|infinite|n/a|1000\np*|n2|20|gpu:4|up|infinite|n/a|900\n")["p"]
    # the smallest share over the nodes that hold the GPUs: n1 floor(10/3)=3, n2 floor(20/4)=5
    assert limits.gpu_share(part, 1) == limits.Share(cpus=3, mem_mb=225)
    assert limits.gpu_share(part, 4) == limits.Share(cpus=20, mem_mb=900)  # only n2 holds 4
    tiny = parse_partitions("t*|n1|2|gpu:8|up|infinite|n/a|1\n")["t"]
    assert limits.gpu_share(tiny, 1) == limits.Share(cpus=1, mem_mb=None)  # memory not configured: ask none


def test_given_cpus_memory_or_exclusive_are_not_replaced(parts):
    assert (fit(parts["gpu"], gpus_per_node=1, cpus_per_node=8).cpus_per_node,
            fit(parts["gpu"], gpus_per_node=1, cpus_per_node=8).mem) == (8, "64000M")
    assert fit(parts["gpu"], gpus_per_node=1, mem="10G").mem == "10G"
    whole = fit(parts["gpu"], gpus_per_node=1, exclusive=True)
    assert (whole.cpus_per_node, whole.mem, whole.exclusive) == (64, None, True)
    cpu = fit(parts["cpu"])  # no GPUs: a whole node's CPUs, the cluster's memory default
    assert (cpu.gpus_per_node, cpu.cpus_per_node, cpu.mem) == (0, 128, None)


def test_gpu_partition_needs_gpus_per_node_unless_zero_is_explicit(parts):
    with pytest.raises(ClusterError) as info:
        fit(parts["gpu"])
    assert str(info.value) == ("partition 'gpu' has 4 GPU(s) per node and no --gpus-per-node was given: pass "
                               "--gpus-per-node N (1-4), or --gpus-per-node 0 to train on CPUs only")
    cpu_job = fit(parts["gpu"], gpus_per_node=0)
    assert cpu_job.gpus_per_node == 0 and cpu_job.cpus_per_node == 64 and cpu_job.gres is None
    with pytest.raises(ClusterError, match="--gpus-per-node 5 is more than partition 'gpu' has per node"):
        fit(parts["gpu"], gpus_per_node=5)


def test_typed_gpus_ask_for_gres_with_the_type(parts):
    settings = fit(parts["gpu"], gpus_per_node=2, gpu_type="a100")
    assert settings.gres == "gpu:a100:2" and submitit_parameters(settings, "x")["gres"] == "gpu:a100:2"
    script = render_standalone(settings, "x", "/shared/runs/x", "/venv/bin/python")
    assert "#SBATCH --gres=gpu:a100:2\n" in script
    mixed = fit(parts["mixed"], gpus_per_node=2, gpu_type="v100")  # 2 of the node's 3 GPUs
    assert (mixed.cpus_per_node, mixed.mem) == (32, None)
    with pytest.raises(ClusterError, match=r"--gpus-per-node 2 is more than partition 'mixed' has per node \(1 a100"):
        fit(parts["mixed"], gpus_per_node=2, gpu_type="a100")
    with pytest.raises(ClusterError, match="--gpu-type h100: partition 'gpu' has no GPUs of that type: use one of"):
        fit(parts["gpu"], gpus_per_node=1, gpu_type="h100")
    untyped = parse_partitions("u*|n1|8|gpu:2|up|infinite|n/a|1000\n")["u"]
    with pytest.raises(ClusterError, match="does not name its GPU types: leave --gpu-type out"):
        fit(untyped, gpus_per_node=1, gpu_type="a100")


@pytest.mark.parametrize("options, words", [
    ({"gpu_type": "a100;rm", "gpus_per_node": 1}, "--gpu-type 'a100;rm' is not a GPU type: letters, digits"),
    ({"gpu_type": "a" * 65, "gpus_per_node": 1}, "at most 64 characters"),
    ({"gpu_type": "4", "gpus_per_node": 1}, "is not a GPU type"),
    ({"gpu_type": "a100", "gpus_per_node": 0}, "--gpu-type a100 with --gpus-per-node 0 asks for no GPUs"),
    ({"sbatch_args": ("gres=gpu:a100:4",)}, "--sbatch-arg gres is set by hpctune: use --gpus-per-node 4 "
                                            "--gpu-type a100 instead"),
    ({"sbatch_args": ("gpus-per-node=a100:2",)}, "use --gpus-per-node 2 --gpu-type a100 instead"),
    ({"sbatch_args": ("gres=gpu:2",)}, "use --gpus-per-node 2 instead"),
    ({"sbatch_args": ("gpus=mig",)}, "with --gpu-type TYPE for typed GPUs"),
    ({"sbatch_args": ("cpus-per-task=4",)}, "use --cpus-per-node instead"),
    ({"exclusive": "no"}, "--exclusive must be true or false"),
])
def test_gpu_options_are_checked_and_managed_sbatch_args_name_the_fix(options, words):
    with pytest.raises(SpecError) as info:
        resolve(options)
    assert words in str(info.value) and "\n" not in str(info.value)
    assert "hpctune needs its own value there" not in str(info.value)


def test_time_defaults_to_default_time_else_one_hour_and_stays_under_max_time(parts, caplog):
    with caplog.at_level(logging.INFO, logger="hpctune"):
        assert fit(parts["gpu"], gpus_per_node=1).time_min == 120  # DefaultTime 02:00:00
    assert "--time not given: asking for 0-02:00:00, partition 'gpu''s DefaultTime" in caplog.text
    assert fit(parts["cpu"]).time_min == limits.DEFAULT_TIME_MIN == 60  # no DefaultTime, MaxTime infinite
    short = parse_partitions("s*|n1|4|(null)|up|30:00|n/a|1000\n")["s"]
    assert fit(short).time_min == 30  # the one-hour default cut to MaxTime
    assert fit(parts["gpu"], gpus_per_node=1, time="2-00:00:00").time_min == 2880  # MaxTime itself: fine


def test_time_beyond_max_time_is_one_line_naming_the_limit_and_the_fix(parts):
    with pytest.raises(ClusterError) as info:
        fit(parts["gpu"], gpus_per_node=1, time="3-00:00:00")
    assert str(info.value) == ("--time 3-00:00:00 is more than partition 'gpu' allows (MaxTime 2-00:00:00): pass "
                               "--time 2-00:00:00 or less, or another --partition")
    assert info.value.exit_code == 2


def test_signal_delay_is_checked_against_the_time_the_partition_gives():
    short = parse_partitions("s*|n1|4|(null)|up|infinite|1:00|1000\n")["s"]
    with pytest.raises(SpecError, match="--signal-delay 90 s is not shorter than --time"):
        fit(short)


def test_no_exclusive_overrides_a_profiles_exclusive(tmp_path, monkeypatch):
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text("profiles:\n  whole: {partition: gpu, exclusive: true}\n")
    monkeypatch.setenv("HPCTUNE_PROFILES", str(profiles))
    assert resolve({"profile": "whole", "exclusive": None}).exclusive is True
    assert resolve({"profile": "whole", "exclusive": False}).exclusive is False


@pytest.mark.parametrize("args, env, expected", [
    ([], {}, None), (["--exclusive"], {}, True), (["--no-exclusive"], {}, False),
    ([], {"HPCTUNE_EXCLUSIVE": "true"}, True), ([], {"HPCTUNE_EXCLUSIVE": "0"}, False),
    (["--no-exclusive"], {"HPCTUNE_EXCLUSIVE": "1"}, False),
])
def test_exclusive_flag_pair_and_its_environment_default(args, env, expected):
    @click.command()
    @cluster_options
    def command(**options):
        click.echo(repr((options["exclusive"], options["gpu_type"])))

    out = CliRunner().invoke(command, [*args, "--gpu-type", "a100"], env=env)
    assert out.exit_code == 0 and out.output.strip() == repr((expected, "a100")), out.output


def test_dry_run_without_slurm_uses_what_was_given_and_says_what_it_assumes():
    given, assumed = assume_without_cluster(resolve({"gpus_per_node": 2, "mem": "8G", "time": "30",
                                                     "cpus_per_node": 4}))
    assert (given.gpus_per_node, given.cpus_per_node, given.mem, given.time_min, assumed) == (2, 4, "8G", 30, [])
    preview, assumed = assume_without_cluster(resolve({"gpus_per_node": 2}))
    assert (preview.cpus_per_node, preview.mem, preview.time_min) == (16, None, 60)
    notice = _no_slurm_notice(assumed)
    assert notice == ("hpctune: Slurm is not installed here: partition, limit and node-size checks skipped "
                      "(--dry-run); not given, so the preview assumes 16 CPUs per node (--cpus-per-node), the "
                      "cluster's default memory (--mem), time 0-01:00:00 (--time)")
    assert assume_without_cluster(resolve({}))[0].gpus_per_node == 0


def test_files_the_nodes_read_must_not_be_node_local(tmp_path, monkeypatch):
    from hpctune.errors import SpecError
    from hpctune.slurm.settings import check_shared

    monkeypatch.delenv("TMPDIR", raising=False)
    check_shared({"dataset": "/project/me/data.yaml", "model": "yolov8n.yaml", "--python": None})
    with pytest.raises(SpecError, match=r"^dataset /tmp/data.yaml is node-local \(/tmp\): .* shared storage"):
        check_shared({"dataset": "/tmp/data.yaml"})
    with pytest.raises(SpecError, match=r"^--python /dev/shm/venv/bin/python is node-local"):
        check_shared({"--python": "/dev/shm/venv/bin/python"})
