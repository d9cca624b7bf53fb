"""The job's Python (--python, HPCTUNE_PYTHON, a profile's `python`): validated like every value that reaches a
script, quoted in both routes' scripts, and checked on the first node by a preflight that runs after the setup
lines and before the search's srun. The preflight itself is run here in bash against real virtual environments;
the dry runs need no Slurm. tests/slurm/test_slurm_python.py runs both on the local Slurm cluster."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REPO

from hpctune.cli.slurm import sbatch_script, submit
from hpctune.errors import SpecError
from hpctune.slurm.profiles import load_profile
from hpctune.slurm.sbatch import node_command, preflight_lines, python_command, render_standalone, render_submitit
from hpctune.slurm.settings import ClusterSettings, resolve

ACTIVATE = "source /project/me/venv/bin/activate"


@pytest.fixture(autouse=True)
def no_profiles_no_slurm(tmp_path, monkeypatch):
    """No profile file, no HPCTUNE_PYTHON, and no sbatch on PATH: dry runs skip the cluster checks."""
    monkeypatch.setenv("HPCTUNE_PROFILES", str(tmp_path / "none.yaml"))
    monkeypatch.delenv("HPCTUNE_PYTHON", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))


@pytest.mark.parametrize("given, resolved", [
    ("python", "python"), ("python3.11", "python3.11"), ("/project/me/venv/bin/python", "/project/me/venv/bin/python"),
    ("/opt/conda/envs/yolo-2.1/bin/python3", "/opt/conda/envs/yolo-2.1/bin/python3"),
])
def test_python_is_a_path_or_a_command_name(given, resolved):
    assert resolve({"python": given}).python == resolved
    assert resolve({}).python is None  # the Python running hpctune here


def test_a_relative_or_home_path_is_made_absolute_here(tmp_path):
    assert resolve({"python": "venv/bin/python"}).python == str(tmp_path / "venv" / "bin" / "python")
    assert resolve({"python": "~/venv/bin/python"}).python == str(Path.home() / "venv" / "bin" / "python")


@pytest.mark.parametrize("value", [
    "python; rm -rf ~", "python -u", "$(whoami)", "`id`", "py'thon", 'py"thon', "py|thon", "py>x", "py&", "py\\n",
    "python\nsrun evil", "python\t", "\x7fpython", "-c", "~", ".", "..", "x" * 513,
])
def test_shell_syntax_control_characters_and_long_values_are_refused_in_one_line(value):
    with pytest.raises(SpecError) as error:
        resolve({"python": value})
    text = str(error.value)
    assert text.startswith("--python ") and "\n" not in text and "--python /project/me/venv/bin/python" in text


def test_a_profile_names_the_python_and_the_command_line_wins(tmp_path, monkeypatch):
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(f"profiles:\n  site:\n    setup: ['{ACTIVATE}']\n    python: python\n")
    monkeypatch.setenv("HPCTUNE_PROFILES", str(profiles))
    assert load_profile("site")[1]["python"] == "python"
    assert resolve({"profile": "site"}).python == "python"
    assert resolve({"profile": "site", "python": "/opt/py/bin/python"}).python == "/opt/py/bin/python"


def test_the_python_word_is_quoted_in_the_scripts():
    settings = ClusterSettings(cpus_per_node=2, time_min=30, setup=[ACTIVATE])
    python = python_command("/opt/my venv/bin/python")  # the default sys.executable may hold a space
    assert python == "'/opt/my venv/bin/python'"
    for script in (render_submitit(settings, "x", "/shared/runs/x/slurm", python),
                   render_standalone(settings, "x", "/shared/runs/x", python)):
        assert "hpctune_python='/opt/my venv/bin/python'\n" in script
        assert "exec \"$0\" \"$@\"' '/opt/my venv/bin/python' -u -m " in script
        _assert_bash_syntax(script)


def _dry_run(command, *args: str, data: Path, storage: Path):
    arguments = ["model=yolov8n.yaml", f"data={data}", "epochs=2", "--grace-period", "1", "--nodes", "2",
                 "--gpus-per-node", "1", "--storage", str(storage), "--name", "py", "--dry-run", *args]
    return CliRunner().invoke(command, arguments)


@pytest.mark.parametrize("command", [submit, sbatch_script], ids=["submit", "sbatch"])
def test_both_dry_runs_put_the_preflight_after_the_setup_lines_and_before_the_srun(command, shared_tmp, tiny_data):
    out = _dry_run(command, "--setup", ACTIVATE, "--python", "python", data=tiny_data, storage=shared_tmp / "runs")
    assert out.exit_code == 0, out.stderr
    script = out.stdout.split("# ---- hpctune: resolved spec")[0]
    lines = script.splitlines()
    last_sbatch = max(i for i, line in enumerate(lines) if line.startswith("#SBATCH "))
    preflight = lines.index("hpctune_python=python")
    setup = next(i for i, line in enumerate(lines) if line.strip().startswith(ACTIVATE + " || "))
    check = next(i for i, line in enumerate(lines) if "-c 'import hpctune.jobs.entry'" in line)
    srun = next(i for i, line in enumerate(lines) if line.startswith("srun "))
    assert last_sbatch < preflight < setup < check < srun, script
    assert lines[srun:].count(") || exit 2") == 0 and ") || exit 2" in lines[check:srun]
    tasks = " ".join(lines[srun:])
    assert f"/bin/bash -c '{ACTIVATE} && exec \"$0\" \"$@\"' python -u -m " in tasks  # found after the setup line
    _assert_bash_syntax(script)
    assert not (shared_tmp / "runs").exists(), "a dry run writes nothing"


@pytest.mark.parametrize("command", [submit, sbatch_script], ids=["submit", "sbatch"])
def test_a_bad_python_is_one_line_exit_2_and_nothing_written(command, shared_tmp, tiny_data, monkeypatch):
    out = _dry_run(command, "--python", "python && curl x | sh", data=tiny_data, storage=shared_tmp / "runs")
    assert out.exit_code == 2 and out.stdout == "", out.stdout
    assert out.stderr.startswith("hpctune: error: --python 'python && curl x | sh' is not a path or a command name")
    assert out.stderr.count("\n") == 1, out.stderr
    monkeypatch.setenv("HPCTUNE_PYTHON", "py$HOME")  # the environment default is checked the same way
    out = _dry_run(command, data=tiny_data, storage=shared_tmp / "runs")
    assert out.exit_code == 2 and "--python 'py$HOME' is not a path or a command name" in out.stderr, out.stderr
    assert not (shared_tmp / "runs").exists()


# The preflight and the tasks' command, run by bash as the batch script runs them (no Slurm: the node's name
# comes from hostname). Folders under tmp_path: nothing on the import path but what the venvs give.

def _venv(folder: Path, imports_hpctune: bool) -> Path:
    """A second environment whose `python` is not this one; with the .pth it imports hpctune and its
    dependencies (this environment's site-packages and the repository), without it nothing of them."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    if imports_hpctune:
        site = next((folder / "lib").glob("python3*/site-packages"))
        (site / "hpctune-test.pth").write_text(f"{sysconfig.get_paths()['purelib']}\n{REPO}\n")
    return folder


def _preflight(setup: list[str], python: str, cwd: Path) -> subprocess.CompletedProcess:
    script = cwd / "preflight.sh"
    script.write_text("\n".join(["#!/bin/bash", *preflight_lines(setup, python), "echo preflight-passed", ""]))
    return subprocess.run(["/bin/bash", str(script)], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)})


def _assert_one_error_line(out: subprocess.CompletedProcess, *words: str) -> None:
    assert out.returncode == 2 and "preflight-passed" not in out.stdout, (out.stdout, out.stderr)
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hpctune: error: "), out.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_preflight_passes_with_this_python_and_the_setup_lines_run_first(tmp_path):
    out = _preflight(["export HPCTUNE_MARK=1", 'test "$HPCTUNE_MARK" = 1'], python_command(), tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "preflight-passed", out.stderr


def test_preflight_finds_python_on_the_path_the_setup_lines_made(tmp_path):
    venv = _venv(tmp_path / "venv2", imports_hpctune=True)
    setup = [f"source {venv}/bin/activate"]
    out = _preflight(setup, "python", tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "preflight-passed", out.stderr
    # and each task's command runs that same interpreter
    task = node_command(setup, "python") + " -c 'import sys, hpctune; print(sys.executable)'"
    ran = subprocess.run(["/bin/bash", "-c", task], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin"})
    assert ran.returncode == 0 and ran.stdout.strip() == str(venv / "bin" / "python"), ran.stderr


def test_preflight_refuses_a_python_that_does_not_import_hpctune(tmp_path):
    venv = _venv(tmp_path / "venv3", imports_hpctune=False)
    out = _preflight([f"source {venv}/bin/activate"], "python", tmp_path)
    _assert_one_error_line(out, "python 'python' on node ", "does not import hpctune after the setup lines",
                           "(ModuleNotFoundError: No module named 'hpctune')", "install hpctune there or give --python")


def test_preflight_refuses_a_missing_python_and_a_failing_setup_line(tmp_path):
    _assert_one_error_line(_preflight([], "/nonexistent/bin/python", tmp_path),
                           "python '/nonexistent/bin/python' not found on node ", "give --python a path")
    _assert_one_error_line(_preflight(["false"], python_command(), tmp_path),
                           "a setup line failed on node ", "(exit 1)", "fix --setup")


def _assert_bash_syntax(script: str) -> None:
    out = subprocess.run(["/bin/bash", "-n"], input=script, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
