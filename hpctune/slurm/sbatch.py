"""sbatch scripts of a run: submitit's (what `hpctune submit` sends) and the standalone one from
the template in hpctune/slurm/templates (package data; what `hpctune sbatch` prints).

Both start one task per node with `srun`; each task runs the setup lines and then Python,
in the same shell, so `module load ...` takes effect on every node before Python starts, and a
--python given as a command name (`python`) is the one the setup lines put on PATH. With --container,
Python runs in the image (`Container`): the setup lines run on the host, then
`apptainer exec [--nv] --bind PATHS IMAGE PY ...`. Before that srun, both run the same preflight
on the first node (`preflight_lines`), in the container too where there is one. Both run the same in-job
entry (hpctune.jobs.entry). Neither holds a secret: the Ray token is made inside the job, W&B reads
its key from the user's own login.
"""

from __future__ import annotations

import shlex
import string
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpctune.errors import SpecError
from hpctune.slurm.settings import ClusterSettings

TEMPLATES = Path(__file__).resolve().parent / "templates"  # package data: present in a wheel install
STANDALONE_TEMPLATE = "standalone.sbatch"
PREFLIGHT_IMPORT = "hpctune.jobs.entry"  # what every task imports first, submitit included: well under a second
FAIL = "{ echo \"hpctune: error: %s\" >&2; exit 2; }"
WHERE = "on node $hpctune_node"
# Appended to a container's --bind list where the line runs, on each node: Ray's node-local temp dir is made
# under $TMPDIR, which Slurm or the site may point outside the /tmp Apptainer binds by default.
NODE_TMPDIR = '"${TMPDIR:+,$TMPDIR}"'


def python_command(python: str | None = None, container: str | None = None) -> str:
    """The job's interpreter as one shell word: --python; else python3 in a --container (the login node's
    interpreter path means nothing inside an image); else the one running hpctune here."""
    return shlex.quote(python or ("python3" if container else sys.executable))


@dataclass(frozen=True)
class Container:
    """Each node's Python run in an image, in Apptainer's documented form
    `apptainer exec [exec options...] <container> <command>`: `--nv` for the NVIDIA GPUs Slurm gave the
    task, `--bind src[:dest[:opts]]` comma-separated. Apptainer passes the environment (SLURM_*,
    CUDA_VISIBLE_DEVICES) and the host network through, and binds $HOME, /tmp, /dev (with /dev/shm) by default."""

    runtime: str
    image: str
    binds: tuple[str, ...]
    gpus: bool

    def prefix(self) -> str:
        """The shell words before the Python word; the node's $TMPDIR joins the binds when set."""
        binds = shlex.quote(",".join(self.binds)) + NODE_TMPDIR if self.binds else '"${TMPDIR:-/tmp}"'
        nv = " --nv" if self.gpus else ""  # no NVIDIA libraries to bind for a CPU job
        return f"{self.runtime} exec{nv} --bind {binds} {shlex.quote(self.image)}"

    def checks(self) -> list[str]:
        """Preflight lines: the image readable on the node, the runtime on PATH after the setup lines."""
        lines = []
        if "://" not in self.image:  # a URI is pulled by the runtime itself
            lines.append(f"    test -r {shlex.quote(self.image)} || " + FAIL % (
                f"container image {self.image} not readable {WHERE}: put it on storage every node sees, "
                "or fix --container"))
        other = "singularity" if self.runtime == "apptainer" else "apptainer"
        lines.append(f"    command -v {self.runtime} >/dev/null || " + FAIL % (
            f"{self.runtime} not found {WHERE} after the setup lines: load it in one, e.g. "
            f"--setup 'module load {self.runtime}', or use --container-runtime {other}"))
        return lines


def container_for(settings: ClusterSettings, run_paths: Iterable[str | Path] = ()) -> Container | None:
    """The settings' container, binding `run_paths` (the folders the search reads and writes) and --bind."""
    if not settings.container:
        return None
    binds = dict.fromkeys([*bind_paths(run_paths), *settings.binds])
    return Container(settings.container_runtime, settings.container, tuple(binds), bool(settings.gpus_per_node))


def bind_paths(paths: Iterable[str | Path]) -> list[str]:
    """Absolute folders as one --bind list: each once, none inside another already bound."""
    kept: list[Path] = []
    for path in (Path(p).absolute() for p in paths):
        text = str(path)
        if ":" in text or "," in text or any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise SpecError(f"{text[:80]!r} cannot be bound into the container: Apptainer's --bind separates paths "
                            "at ',' and ':'; move it to a path without them")
        if any(path == k or k in path.parents for k in kept):
            continue
        kept = [k for k in kept if path not in k.parents]
        kept.append(path)
    return [str(k) for k in kept]


def preflight_lines(setup: list[str], python: str, container: Container | None = None) -> list[str]:
    """Shell lines the batch script runs on the first node before the search's srun: the setup lines,
    then `python` (a shell word) must be found and import hpctune, inside the container where there is
    one (the same command the tasks run). In a subshell: the batch shell keeps the submitted environment,
    as each task runs the setup lines itself. A wrong environment then ends the job at once, in one line
    and exit code 2, instead of a traceback from every task."""
    lines = [
        "# hpctune preflight: on this first node, after the setup lines, the job's python must import hpctune",
        f"hpctune_python={python}",
        "hpctune_node=${SLURMD_NODENAME:-$(hostname)}",
        "(",
    ]
    if setup:
        lines.append(f"    {' && '.join(setup)} || " + FAIL % (
            f"a setup line failed {WHERE} (exit $?): fix --setup or the profile's setup lines"))
    if container is None:
        lines.append('    command -v "$hpctune_python" >/dev/null || ' + FAIL % (
            f"python '$hpctune_python' not found {WHERE} after the setup lines: give --python a path, "
            "or a command the setup lines put on PATH"))
        run, which, fix = '"$hpctune_python"', f"python '$hpctune_python' {WHERE}", "install hpctune there"
    else:
        lines += container.checks()
        run = f'{container.prefix()} "$hpctune_python"'
        which = f"python '$hpctune_python' in container {container.image} {WHERE}"
        fix = "install hpctune in the image (pip install hpctune in its definition file)"
    lines += [
        f'    if ! hpctune_why=$({run} -c \'import {PREFLIGHT_IMPORT}\' 2>&1); then',
        "        hpctune_why=${hpctune_why##*$'\\n'}  # the error's last line",
        f'        echo "hpctune: error: {which} does not import hpctune after the setup lines ($hpctune_why): '
        f'{fix} or give --python" >&2',
        "        exit 2",
        "    fi",
        ") || exit 2",
    ]
    return lines


def node_command(setup: list[str], python: str, container: Container | None = None) -> str:
    """The command that starts Python on each node: after the setup lines, failing if one fails; in the
    container where there is one (run by the same shell, so the node's own $TMPDIR is bound)."""
    if not setup and container is None:
        return python
    run = f'exec {container.prefix()} "$0" "$@"' if container else 'exec "$0" "$@"'
    script = " && ".join([*setup, run])
    return f"/bin/bash -c {shlex.quote(script)} {python}"


def submitit_parameters(settings: ClusterSettings, job_name: str, python: str | None = None,
                        run_paths: Iterable[str | Path] = ()) -> dict[str, Any]:
    """submitit.SlurmExecutor.update_parameters(**these); `python` is the job's interpreter as a shell word
    (default: python_command(settings.python, settings.container)); `run_paths` are bound into a container."""
    extra: dict[str, Any] = {"requeue": True}  # preempted or timed-out jobs go back to the queue
    extra.update({k: (v if v != "" else True) for k, v in settings.sbatch_args.items()})
    params: dict[str, Any] = {
        "job_name": job_name,
        "nodes": settings.nodes,
        "ntasks_per_node": 1,  # one task per node: the Ray head or a Ray worker
        "cpus_per_task": settings.cpus_per_node,
        "time": settings.time_min,
        "signal_delay_s": settings.signal_delay_s,
        "wckey": None,  # submitit's default "submitit" is refused where wckeys are enforced
        # a lost worker node must not take the search down; --cpus-per-task again on the srun line: Slurm
        # 22.05-23.02 do not pass it from sbatch to srun, which would bind Ray to one CPU while told all
        "srun_args": ["--kill-on-bad-exit=0", f"--cpus-per-task={settings.cpus_per_node}"],
        # submitit writes `setup` into the batch script before its srun: the preflight's place
        "setup": preflight_lines(settings.setup, python or python_command(settings.python, settings.container),
                                 container_for(settings, run_paths)),
        "additional_parameters": extra,
    }
    optional = {
        "partition": settings.partition, "account": settings.account, "qos": settings.qos,
        "constraint": settings.constraint, "mem": settings.mem,
        "gres": settings.gres,
        "exclusive": True if settings.exclusive else None,
    }
    params.update({k: v for k, v in optional.items() if v is not None})
    return params


def submitit_command(python: str, folder: str | Path) -> str:
    """What submitit runs on each task (SlurmExecutor._submitit_command_str)."""
    return " ".join([python, "-u -m submitit.core._submit", shlex.quote(str(folder))])


def render_submitit(settings: ClusterSettings, job_name: str, folder: str | Path, python: str,
                    run_paths: Iterable[str | Path] = ()) -> str:
    """The script submitit writes for these settings (its own renderer, so they cannot differ)."""
    from submitit.slurm.slurm import _make_sbatch_string

    run_paths = list(run_paths)
    command = submitit_command(node_command(settings.setup, python, container_for(settings, run_paths)), folder)
    return _make_sbatch_string(command=command, folder=folder,
                               **submitit_parameters(settings, job_name, python, run_paths))


def sbatch_lines(settings: ClusterSettings, job_name: str, log_dir: str | Path) -> list[str]:
    """#SBATCH lines of the standalone script, sorted by option like submitit's."""
    options: dict[str, Any] = {
        "job-name": job_name, "nodes": settings.nodes, "ntasks-per-node": 1,
        "cpus-per-task": settings.cpus_per_node, "time": settings.time,
        "signal": f"USR2@{settings.signal_delay_s}", "requeue": True, "open-mode": "append",
        "output": f"{log_dir}/%j_log.out", "error": f"{log_dir}/%j_log.err",
        "partition": settings.partition, "account": settings.account, "qos": settings.qos,
        "constraint": settings.constraint, "mem": settings.mem,
        "gres": settings.gres,
        "exclusive": True if settings.exclusive else None,
    }
    options.update({k: (v if v != "" else True) for k, v in settings.sbatch_args.items()})
    lines = []
    for key in sorted(k for k, v in options.items() if v is not None):
        value = options[key]
        lines.append(f"#SBATCH --{key}" if value is True else f"#SBATCH --{key}={shlex.quote(str(value))}")
    return lines


def render_standalone(settings: ClusterSettings, job_name: str, run_dir: str | Path, python: str,
                      template: Path | None = None, run_paths: Iterable[str | Path] = ()) -> str:
    """The standalone script for `sbatch`, from hpctune/slurm/templates/standalone.sbatch; `run_paths`
    are bound into a container."""
    log_dir = Path(run_dir) / "slurm"
    container = container_for(settings, run_paths)
    text = (template or TEMPLATES / STANDALONE_TEMPLATE).read_text()
    return string.Template(text).substitute(
        name=job_name,
        run_dir=shlex.quote(str(run_dir)),
        log_dir=shlex.quote(str(log_dir)),
        sbatch_lines="\n".join(sbatch_lines(settings, job_name, log_dir)),
        preflight="\n".join(preflight_lines(settings.setup, python, container)),
        node_command=node_command(settings.setup, python, container),
    )
