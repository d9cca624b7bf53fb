"""--container IMAGE (HPCTUNE_CONTAINER, a profile's `container`), --container-runtime and --bind: validated like
every value that reaches a script, rendered in both routes' scripts as Apptainer's documented
`apptainer exec [exec options...] <container> <command>` with `--nv` and `--bind src[:dest[:opts]]`, in the
preflight and in every task. No container runtime is installed here: the scripts are checked as text, by
`bash -n`, and by bash itself for the words each task hands to the runtime and for the preflight's refusals."""

from __future__ import annotations

import shlex
import socket
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpctune.cli.slurm import sbatch_script, submit
from hpctune.errors import SpecError
from hpctune.jobs.submit import node_paths
from hpctune.run.spec import RunSpec
from hpctune.slurm.profiles import load_profile
from hpctune.slurm.sbatch import (
    Container,
    bind_paths,
    container_for,
    node_command,
    preflight_lines,
    python_command,
    render_standalone,
    render_submitit,
)
from hpctune.slurm.settings import ClusterSettings, check_container_image, resolve

IMAGE = "/project/me/hpctune.sif"
TMPDIR_BIND = '"${TMPDIR:+,$TMPDIR}"'  # the node's own $TMPDIR, appended where the task runs


@pytest.fixture(autouse=True)
def no_profiles_no_slurm(tmp_path, monkeypatch):
    """No profile file, no HPCTUNE_* container settings, and no sbatch on PATH: dry runs skip the cluster checks."""
    monkeypatch.setenv("HPCTUNE_PROFILES", str(tmp_path / "none.yaml"))
    for name in ("HPCTUNE_PYTHON", "HPCTUNE_CONTAINER", "HPCTUNE_CONTAINER_RUNTIME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))


# ---- the values

@pytest.mark.parametrize("image", [
    IMAGE, "/scratch/me/img/yolo-8.3_cuda12.sif", "docker://ultralytics/ultralytics:8.3.0",
    "docker://nvcr.io/nvidia/pytorch:24.01-py3", "docker://me/hpctune@sha256:0123abcd", "oras://ghcr.io/me/hpctune:1.0",
    "library://me/default/hpctune:latest",
])
def test_an_image_is_a_sif_file_or_an_image_uri(image):
    settings = resolve({"container": image})
    assert (settings.container, settings.container_runtime, settings.binds) == (image, "apptainer", [])
    assert resolve({}).container is None


def test_a_relative_or_home_image_is_made_absolute_here(shared_tmp, monkeypatch):
    monkeypatch.chdir(shared_tmp)
    assert resolve({"container": "img/hpctune.sif"}).container == str(shared_tmp / "img" / "hpctune.sif")
    assert resolve({"container": "~/hpctune.sif"}).container == str(Path.home() / "hpctune.sif")


@pytest.mark.parametrize("image", [
    "/p/a b.sif", "/p/a;rm -rf ~.sif", "/p/$(id).sif", "/p/`id`.sif", "/p/a'b.sif", "/p/x.img", "/p/x.sif.tar",
    "/p/x.sif\nsrun evil", "/p/x\t.sif", "http://example.org/x.sif", "shub://x/y", "docker://a b", "docker://x;id",
    "docker://", "/tmp/hpctune.sif", "/dev/shm/hpctune.sif", "/p/" + "x" * 520 + ".sif",
])
def test_a_bad_image_is_refused_in_one_line_naming_the_fix(image):
    with pytest.raises(SpecError) as error:
        resolve({"container": image})
    text = str(error.value)
    assert text.startswith("--container ") and "\n" not in text, text
    assert f"--container {IMAGE}" in text, text


def test_runtime_is_apptainer_or_singularity():
    assert resolve({"container": IMAGE, "container_runtime": "singularity"}).container_runtime == "singularity"
    for runtime in ("docker", "podman", "apptainer exec", "singularity;id"):
        with pytest.raises(SpecError, match=r"^--container-runtime .* is not apptainer or singularity: leave it out"):
            resolve({"container": IMAGE, "container_runtime": runtime})


def test_binds_are_made_absolute_kept_in_order_once(tmp_path):
    settings = resolve({"container": IMAGE, "binds": ("data", "/scratch/me/cache", "/project/w:/weights:ro",
                                                      "~/refs:/refs", "/scratch/me/cache", "/a:/b:rw")})
    assert settings.binds == [str(tmp_path / "data"), "/scratch/me/cache", "/project/w:/weights:ro",
                              f"{Path.home()}/refs:/refs", "/a:/b:rw"]


@pytest.mark.parametrize("bind", [
    "", ":/x", "/a,/b", "/a b", "/a:rel", "/a:/b:rx", "/a:/b:ro:x", "/a:/b:ro,x", "$HOME/x", "/a;id", "/a\n/b",
    "/a:/b\t", "/" + "x" * 520,
])
def test_a_bad_bind_is_refused_in_one_line_naming_the_fix(bind):
    with pytest.raises(SpecError) as error:
        resolve({"container": IMAGE, "binds": (bind,)})
    text = str(error.value)
    assert text.startswith("--bind ") and "\n" not in text and "--bind /scratch/me/data:/data:ro" in text, text


def test_binds_need_a_container_and_are_bounded():
    with pytest.raises(SpecError, match=r"^--bind /x binds into no container: give --container IMAGE"):
        resolve({"binds": ("/x",)})
    with pytest.raises(SpecError, match="33 binds are more than 32"):
        resolve({"container": IMAGE, "binds": tuple(f"/d{i}" for i in range(33))})


def test_a_profile_names_container_runtime_and_binds_and_the_command_line_adds_or_wins(tmp_path, monkeypatch):
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text("profiles:\n  site:\n    setup: ['module load singularity']\n"
                        f"    container: {IMAGE}\n    container_runtime: singularity\n"
                        "    binds: [/scratch/me/cache, '/project/w:/weights:ro']\n")
    monkeypatch.setenv("HPCTUNE_PROFILES", str(profiles))
    assert load_profile("site")[1]["container"] == IMAGE
    settings = resolve({"profile": "site"})
    assert (settings.container, settings.container_runtime) == (IMAGE, "singularity")
    assert settings.binds == ["/scratch/me/cache", "/project/w:/weights:ro"]
    settings = resolve({"profile": "site", "container": "docker://me/hpctune:2", "container_runtime": "apptainer",
                        "binds": ("/data/extra",)})
    assert (settings.container, settings.container_runtime) == ("docker://me/hpctune:2", "apptainer")
    assert settings.binds == ["/scratch/me/cache", "/project/w:/weights:ro", "/data/extra"]  # profile's, then yours


def test_the_example_profiles_container_resolves(monkeypatch):
    from hpctune.slurm.sbatch import TEMPLATES

    monkeypatch.setenv("HPCTUNE_PROFILES", str(TEMPLATES / "profiles.example.yaml"))
    settings = resolve({"profile": "in-a-container"})
    assert (settings.container, settings.container_runtime, settings.python) == (
        "/project/me/images/hpctune.sif", "apptainer", "python3")
    assert settings.binds == ["/scratch/me/cache", "/project/me/weights:/weights:ro"]


def test_the_image_file_must_exist_where_the_cluster_is_checked(tmp_path):
    image = tmp_path / "hpctune.sif"
    with pytest.raises(SpecError, match=rf"^--container {image} not found: build it"):
        check_container_image(ClusterSettings(container=str(image)))
    image.write_bytes(b"")
    check_container_image(ClusterSettings(container=str(image)))
    check_container_image(ClusterSettings(container="docker://me/hpctune:1"))  # pulled on the node
    check_container_image(ClusterSettings())


# ---- what is bound

def _spec(tmp_path: Path, **changes) -> RunSpec:
    values = dict(model="yolov8n.yaml", data="/data/coco/coco.yaml", task="detect", metric="fitness", epochs=3,
                  grace_period=1, reduction_factor=3, max_samples=4, gpu_per_trial=1.0, cpus_per_trial=4.0,
                  seed=0, name="run", storage="/project/me/runs", space={},
                  data_config={"path": "/data/coco", "train": "images/train", "val": "images/val"})
    values.update(changes)
    return RunSpec(**values)


def test_node_paths_are_the_storage_the_dataset_root_the_model_folder_and_the_warm_start(tmp_path):
    assert node_paths(_spec(tmp_path)) == ["/project/me/runs", "/data/coco"]  # a shipped model name: no folder
    spec = _spec(tmp_path, model="/project/me/weights/best.pt", warm_start="/scratch/me/old-run",
                 data_config={"path": "/data/coco", "train": ["images/train", "/extra/set2/images/train2017"],
                              "val": "/data/coco/images/val", "test": "/lists/test.txt"})
    assert node_paths(spec) == ["/project/me/runs", "/data/coco", "/extra/set2", "/lists", "/project/me/weights",
                                "/scratch/me/old-run"]  # labels beside the last images/, a list file's folder
    assert node_paths(spec, "/moved/runs/run")[0] == "/moved/runs"  # a moved run directory: where it is now
    assert node_paths(_spec(tmp_path, data="/data/cls", data_config={}, task="classify"))[1] == "/data/cls"
    same = _spec(tmp_path, storage="/project/me", warm_start="/project/me/old", data_config={"path": "/project/me/d"})
    assert node_paths(same) == ["/project/me"]  # each folder once, none inside another


def test_bind_paths_keep_the_outermost_folder_and_refuse_separators():
    assert bind_paths(["/a/b", "/c", "/a", "/a/b/c", "/c"]) == ["/c", "/a"]
    for path in ("/data/a,b", "/data/a:b", "/data/a\nb"):
        with pytest.raises(SpecError, match="cannot be bound into the container: Apptainer's --bind separates"):
            bind_paths([path])


# ---- the scripts

def _container(**changes) -> Container:
    values = dict(runtime="apptainer", image=IMAGE, binds=("/project/me/runs", "/data/coco"), gpus=True)
    values.update(changes)
    return Container(**values)


def test_the_container_prefix_is_apptainers_exec_form():
    assert _container().prefix() == f"apptainer exec --nv --bind /project/me/runs,/data/coco{TMPDIR_BIND} {IMAGE}"
    spaced = _container(runtime="singularity", binds=("/project/my runs", "/d:/data:ro"), gpus=False,
                        image="docker://me/hpctune:1")
    assert spaced.prefix() == ("singularity exec --bind '/project/my runs,/d:/data:ro'" + TMPDIR_BIND
                               + " docker://me/hpctune:1")  # a CPU job: no --nv
    assert _container(binds=()).prefix() == f'apptainer exec --nv --bind "${{TMPDIR:-/tmp}}" {IMAGE}'


def test_python_defaults_to_python3_in_a_container():
    assert python_command(None, IMAGE) == "python3"
    assert python_command("/opt/conda/bin/python", IMAGE) == "/opt/conda/bin/python"
    assert python_command(None, None) != "python3"  # the Python running hpctune here


def test_the_task_runs_the_setup_lines_on_the_host_then_python_in_the_container():
    prefix = _container().prefix()
    assert node_command([], "python3", _container()) == f"/bin/bash -c 'exec {prefix} \"$0\" \"$@\"' python3"
    command = node_command(["module load apptainer"], "python3", _container())
    assert command == f"/bin/bash -c 'module load apptainer && exec {prefix} \"$0\" \"$@\"' python3"
    assert container_for(ClusterSettings(), ["/x"]) is None
    settings = ClusterSettings(container=IMAGE, binds=["/x:/y"], gpus_per_node=2)
    expected = _container(binds=("/project/me/runs", "/x:/y"))
    assert container_for(settings, ["/project/me/runs", "/project/me/runs/run"]) == expected


@pytest.mark.parametrize("tmpdir, bound", [
    (None, "/project/my runs,/data/coco"), ("/local/job 7", "/project/my runs,/data/coco,/local/job 7"),
])
def test_each_task_hands_the_runtime_exactly_these_words(tmpdir, bound):
    """The task's `/bin/bash -c SCRIPT PY ARGS`, run by bash with `exec` defined as a function that prints its
    words: the runtime's argument vector as it would get it on a node with this $TMPDIR, without any runtime."""
    container = _container(binds=("/project/my runs", "/data/coco"))
    argv = shlex.split(node_command(["export HPCTUNE_MARK=1"], "python3", container)
                       + " -u -m hpctune.jobs.entry /r/run")
    assert argv[:2] == ["/bin/bash", "-c"], argv
    script = "exec() { printf '%s\\n' \"$@\"; }\n" + argv[2]
    env = {"PATH": "/usr/bin:/bin", **({"TMPDIR": tmpdir} if tmpdir else {})}
    out = subprocess.run(["/bin/bash", "-c", script, *argv[3:]], capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["apptainer", "exec", "--nv", "--bind", bound, IMAGE, "python3", "-u", "-m",
                                       "hpctune.jobs.entry", "/r/run"], out.stdout


def _dry_run(command, *args: str, data: Path, storage: Path):
    arguments = ["model=yolov8n.yaml", f"data={data}", "epochs=2", "--grace-period", "1", "--nodes", "2",
                 "--gpus-per-node", "1", "--storage", str(storage), "--name", "box", "--dry-run", *args]
    return CliRunner().invoke(command, arguments)


@pytest.mark.parametrize("command", [submit, sbatch_script], ids=["submit", "sbatch"])
def test_both_dry_runs_run_the_preflight_and_every_task_in_the_container(command, shared_tmp, tiny_data):
    storage = shared_tmp / "runs"
    out = _dry_run(command, "--container", IMAGE, "--setup", "module load apptainer", "--bind", "/scratch/me/cache",
                   data=tiny_data, storage=storage)
    assert out.exit_code == 0, out.stderr
    assert "partition, limit, node-size and container image checks skipped" in out.stderr
    script = out.stdout.split("# ---- hpctune: resolved spec")[0]
    wrapped = f"apptainer exec --nv --bind {storage},{tiny_data.parent},/scratch/me/cache{TMPDIR_BIND} {IMAGE}"
    lines = script.splitlines()
    preflight = lines.index("hpctune_python=python3")
    setup = next(i for i, line in enumerate(lines) if line.strip().startswith("module load apptainer || "))
    image = next(i for i, line in enumerate(lines) if line.strip().startswith(f"test -r {IMAGE} || "))
    runtime = next(i for i, line in enumerate(lines) if line.strip().startswith("command -v apptainer >/dev/null"))
    check = next(i for i, line in enumerate(lines)
                 if f'$({wrapped} "$hpctune_python" -c \'import hpctune.jobs.entry\' 2>&1)' in line)
    srun = next(i for i, line in enumerate(lines) if line.startswith("srun "))
    assert preflight < setup < image < runtime < check < srun, script
    tasks = " ".join(lines[srun:])
    assert f"/bin/bash -c 'module load apptainer && exec {wrapped} \"$0\" \"$@\"' python3 -u -m " in tasks, tasks
    assert "in container /project/me/hpctune.sif on node $hpctune_node does not import hpctune" in script
    assert "pip install hpctune in its definition file" in script
    _assert_bash_syntax(script)
    assert not storage.exists(), "a dry run writes nothing"


@pytest.mark.parametrize("command", [submit, sbatch_script], ids=["submit", "sbatch"])
def test_a_profiles_container_and_binds_are_in_the_script_with_its_python(command, shared_tmp, tiny_data,
                                                                          tmp_path, monkeypatch):
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text("profiles:\n  box:\n    setup: ['module load singularity']\n"
                        "    container: docker://me/hpctune:1\n    container_runtime: singularity\n"
                        "    python: /opt/conda/bin/python\n    binds: ['/project/w:/weights:ro']\n")
    monkeypatch.setenv("HPCTUNE_PROFILES", str(profiles))
    storage = shared_tmp / "runs"
    out = _dry_run(command, "--profile", "box", data=tiny_data, storage=storage)
    assert out.exit_code == 0, out.stderr
    wrapped = (f"singularity exec --nv --bind {storage},{tiny_data.parent},/project/w:/weights:ro{TMPDIR_BIND} "
               "docker://me/hpctune:1")
    assert f"exec {wrapped} \"$0\" \"$@\"' /opt/conda/bin/python -u -m " in out.stdout, out.stdout
    assert f'$({wrapped} "$hpctune_python" -c ' in out.stdout and "test -r" not in out.stdout  # a URI: pulled
    assert "hpctune_python=/opt/conda/bin/python\n" in out.stdout
    _assert_bash_syntax(out.stdout.split("# ---- hpctune: resolved spec")[0])


@pytest.mark.parametrize("command", [submit, sbatch_script], ids=["submit", "sbatch"])
@pytest.mark.parametrize("args, env, start", [
    (["--container", "/p/hpctune.sif; curl x | sh"], {}, "--container '/p/hpctune.sif; curl x | sh' is not a .sif"),
    (["--container", "/tmp/hpctune.sif"], {}, "--container /tmp/hpctune.sif is node-local (/tmp)"),
    ([], {"HPCTUNE_CONTAINER": "docker://x/$(id)"}, "--container 'docker://x/$(id)' is not an image URI"),
    (["--container", IMAGE, "--container-runtime", "docker"], {}, "--container-runtime 'docker' is not apptainer"),
    (["--container", IMAGE, "--bind", "/a,/b"], {}, "--bind '/a,/b': '/a,/b' is not an absolute path"),
    (["--bind", "/scratch/me"], {}, "--bind /scratch/me binds into no container"),
])
def test_a_bad_container_value_is_one_line_exit_2_and_nothing_written(command, args, env, start, shared_tmp,
                                                                      tiny_data, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = _dry_run(command, *args, data=tiny_data, storage=shared_tmp / "runs")
    assert out.exit_code == 2 and out.stdout == "", out.stdout
    assert out.stderr.startswith(f"hpctune: error: {start}") and out.stderr.count("\n") == 1, out.stderr
    assert not (shared_tmp / "runs").exists()


def test_the_scripts_without_a_container_are_unchanged():
    settings = ClusterSettings(cpus_per_node=2, time_min=30, binds=[])
    assert "exec --nv" not in render_standalone(settings, "x", "/shared/runs/x", "python", run_paths=["/shared"])
    assert "apptainer" not in render_submitit(settings, "x", "/shared/runs/x/slurm", "python", ["/shared"])


def test_help_says_what_a_container_binds_and_which_python_it_runs():
    text = " ".join(CliRunner().invoke(submit, ["--help"]).output.split())
    assert "python3 with --container" in text and "The image must contain hpctune" in text
    assert "--container-runtime" in text and "--bind SRC[:DST[:ro]]" in text


# ---- the preflight's refusals, run by bash (no runtime here: it stops before the runtime would run)

def _preflight(container: Container, cwd: Path) -> subprocess.CompletedProcess:
    script = cwd / "preflight.sh"
    script.write_text("\n".join(["#!/bin/bash", *preflight_lines([], "python3", container), "echo passed", ""]))
    return subprocess.run(["/bin/bash", str(script)], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)})


def test_preflight_refuses_a_missing_image_and_a_missing_runtime_in_one_line(tmp_path):
    missing = _preflight(_container(image=str(tmp_path / "none.sif")), tmp_path)
    assert missing.returncode == 2 and "passed" not in missing.stdout, missing
    assert missing.stderr.splitlines() == [
        f"hpctune: error: container image {tmp_path / 'none.sif'} not readable on node {_hostname()}: put it on "
        "storage every node sees, or fix --container"]
    (tmp_path / "hpctune.sif").write_bytes(b"")
    for runtime, other in (("apptainer", "singularity"), ("singularity", "apptainer")):
        absent = _preflight(_container(image=str(tmp_path / "hpctune.sif"), runtime=runtime), tmp_path)
        assert absent.returncode == 2 and absent.stderr.splitlines() == [
            f"hpctune: error: {runtime} not found on node {_hostname()} after the setup lines: load it in one, "
            f"e.g. --setup 'module load {runtime}', or use --container-runtime {other}"], absent


def _hostname() -> str:
    return socket.gethostname()


def _assert_bash_syntax(script: str) -> None:
    out = subprocess.run(["/bin/bash", "-n"], input=script, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
