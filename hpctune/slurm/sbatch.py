"""sbatch scripts of a run: submitit's (what `hpctune submit` sends) and the standalone one from
the template in hpctune/slurm/templates (package data; what `hpctune sbatch` prints).

Both start one task per node with `srun`; each task runs the setup lines and then Python,
in the same shell, so `module load ...` takes effect on every node before Python starts, and a
--python given as a command name (`python`) is the one the setup lines put on PATH. Before that
srun, both run the same preflight on the first node (`preflight_lines`). Both run the same in-job
entry (hpctune.jobs.entry). Neither holds a secret: the Ray token is made inside the job, W&B reads
its key from the user's own login.
"""

from __future__ import annotations

import shlex
import string
import sys
from pathlib import Path
from typing import Any

from hpctune.slurm.settings import ClusterSettings

TEMPLATES = Path(__file__).resolve().parent / "templates"  # package data: present in a wheel install
STANDALONE_TEMPLATE = "standalone.sbatch"
PREFLIGHT_IMPORT = "hpctune.jobs.entry"  # what every task imports first, submitit included: well under a second


def python_command(python: str | None = None) -> str:
    """The job's interpreter as one shell word: --python, else the one running hpctune here."""
    return shlex.quote(python or sys.executable)


def preflight_lines(setup: list[str], python: str) -> list[str]:
    """Shell lines the batch script runs on the first node before the search's srun: the setup lines,
    then `python` (a shell word) must be found and import hpctune. In a subshell: the batch shell keeps
    the submitted environment, as each task runs the setup lines itself. A wrong environment then ends
    the job at once, in one line and exit code 2, instead of a traceback from every task."""
    fail = "{ echo \"hpctune: error: %s\" >&2; exit 2; }"
    where = "on node $hpctune_node"
    lines = [
        "# hpctune preflight: on this first node, after the setup lines, the job's python must import hpctune",
        f"hpctune_python={python}",
        "hpctune_node=${SLURMD_NODENAME:-$(hostname)}",
        "(",
    ]
    if setup:
        lines.append(f"    {' && '.join(setup)} || " + fail % (
            f"a setup line failed {where} (exit $?): fix --setup or the profile's setup lines"))
    lines += [
        '    command -v "$hpctune_python" >/dev/null || ' + fail % (
            f"python '$hpctune_python' not found {where} after the setup lines: give --python a path, "
            "or a command the setup lines put on PATH"),
        f'    if ! hpctune_why=$("$hpctune_python" -c \'import {PREFLIGHT_IMPORT}\' 2>&1); then',
        "        hpctune_why=${hpctune_why##*$'\\n'}  # the error's last line",
        f'        echo "hpctune: error: python \'$hpctune_python\' {where} does not import hpctune after the '
        'setup lines ($hpctune_why): install hpctune there or give --python" >&2',
        "        exit 2",
        "    fi",
        ") || exit 2",
    ]
    return lines


def node_command(setup: list[str], python: str) -> str:
    """The command that starts Python on each node: after the setup lines, failing if one fails."""
    if not setup:
        return python
    script = " && ".join([*setup, 'exec "$0" "$@"'])
    return f"/bin/bash -c {shlex.quote(script)} {python}"


def submitit_parameters(settings: ClusterSettings, job_name: str, python: str | None = None) -> dict[str, Any]:
    """submitit.SlurmExecutor.update_parameters(**these); `python` is the job's interpreter as a shell word
    (default: python_command(settings.python))."""
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
        "srun_args": ["--kill-on-bad-exit=0"],  # a lost worker node must not take the search down
        # submitit writes `setup` into the batch script before its srun: the preflight's place
        "setup": preflight_lines(settings.setup, python or python_command(settings.python)),
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


def render_submitit(settings: ClusterSettings, job_name: str, folder: str | Path, python: str) -> str:
    """The script submitit writes for these settings (its own renderer, so they cannot differ)."""
    from submitit.slurm.slurm import _make_sbatch_string

    command = submitit_command(node_command(settings.setup, python), folder)
    return _make_sbatch_string(command=command, folder=folder, **submitit_parameters(settings, job_name, python))


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
                      template: Path | None = None) -> str:
    """The standalone script for `sbatch`, from hpctune/slurm/templates/standalone.sbatch."""
    log_dir = Path(run_dir) / "slurm"
    text = (template or TEMPLATES / STANDALONE_TEMPLATE).read_text()
    return string.Template(text).substitute(
        name=job_name,
        run_dir=shlex.quote(str(run_dir)),
        log_dir=shlex.quote(str(log_dir)),
        sbatch_lines="\n".join(sbatch_lines(settings, job_name, log_dir)),
        preflight="\n".join(preflight_lines(settings.setup, python)),
        node_command=node_command(settings.setup, python),
    )
