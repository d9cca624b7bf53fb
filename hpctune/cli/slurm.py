"""CLI commands for SLURM: submit, sbatch, status, cancel (and `resume --submit`, via resubmit())."""

from __future__ import annotations

import shutil
import sys
from typing import Any

import click
import yaml

from hpctune.cli.options import search_options, spec_arguments, user_errors

CLUSTER_KEYS = ("nodes", "gpus_per_node", "gpu_type", "cpus_per_node", "mem", "partition", "account", "qos", "time",
                "constraint", "exclusive", "setup", "python", "container", "container_runtime", "binds", "sbatch_args",
                "max_requeues", "signal_delay", "profile")


def cluster_options(func):
    """The job's resources and Slurm settings; a --profile supplies any of them."""
    options = [
        click.option("-N", "--nodes", type=int, default=None, envvar="HPCTUNE_NODES",
                     help="Nodes of the job (default 1)."),
        click.option("--gpus-per-node", type=int, default=None, envvar="HPCTUNE_GPUS_PER_NODE",
                     help="GPUs per node; needed on a partition with GPUs (0: train on CPUs only)."),
        click.option("--gpu-type", default=None, metavar="TYPE", envvar="HPCTUNE_GPU_TYPE",
                     help="GPU type as sinfo -o %G lists it, e.g. a100: asks for --gres=gpu:TYPE:N."),
        click.option("--cpus-per-node", type=int, default=None,
                     help="CPUs per node (default: the GPUs' share of a node, e.g. 16 of 64 CPUs for 1 of 4 GPUs; "
                          "a whole node's without GPUs or with --exclusive)."),
        click.option("--mem", default=None, help="Memory per node, e.g. 64G (default: the GPUs' share of a node's, "
                     "rounded down to MB; the cluster's default without GPUs or with --exclusive)."),
        click.option("-p", "--partition", default=None, envvar="HPCTUNE_PARTITION",
                     help="Partition (default: the cluster's default)."),
        click.option("-A", "--account", default=None, envvar="HPCTUNE_ACCOUNT", help="Account to charge."),
        click.option("-q", "--qos", default=None, envvar="HPCTUNE_QOS", help="Quality of service."),
        click.option("-t", "--time", default=None, metavar="D-HH:MM:SS", envvar="HPCTUNE_TIME",
                     help="Time limit of one job run, at most the partition's MaxTime (default: the partition's "
                          "DefaultTime, else 1 hour)."),
        click.option("--constraint", default=None, help="Node features, e.g. a100."),
        click.option("--exclusive/--no-exclusive", default=None, envvar="HPCTUNE_EXCLUSIVE",
                     help="Whole nodes for this job, all their CPUs (--no-exclusive overrides a profile)."),
        click.option("--setup", multiple=True, metavar="LINE",
                     help="Shell line run on every node before Python, e.g. 'module load cuda/12' (repeatable)."),
        click.option("--python", default=None, metavar="CMD", envvar="HPCTUNE_PYTHON",
                     help="The job's Python: a path, or a command found on the node after the setup lines, e.g. "
                          "python after --setup 'source /project/me/venv/bin/activate' (default: the Python "
                          "running hpctune here; python3 with --container). Checked to import hpctune on the "
                          "first node before the search."),
        click.option("--container", default=None, metavar="IMAGE", envvar="HPCTUNE_CONTAINER",
                     help="Run every node's Python in this Apptainer/Singularity image: a .sif file on shared "
                          "storage, or a docker://, oras:// or library:// URI. The image must contain hpctune. "
                          "GPUs (--nv), the run's storage folder, the dataset, the model file's folder and the "
                          "node's $TMPDIR are bound; the setup lines run on the host first."),
        click.option("--container-runtime", default=None, metavar="apptainer|singularity",
                     envvar="HPCTUNE_CONTAINER_RUNTIME",
                     help="The command that runs --container: apptainer (default) or singularity."),
        click.option("--bind", "binds", multiple=True, metavar="SRC[:DST[:ro]]",
                     help="Another folder to bind into --container, as Apptainer's --bind takes it (repeatable)."),
        click.option("--sbatch-arg", "sbatch_args", multiple=True, metavar="KEY=VALUE",
                     help="Any other sbatch option, e.g. mail-type=END (repeatable)."),
        click.option("--max-requeues", type=int, default=None,
                     help="Requeues after reaching --time (default 3); preemptions always requeue."),
        click.option("--signal-delay", type=int, default=None,
                     help="Seconds between the stop signal (USR2) and the time limit (default 90)."),
        click.option("--profile", default=None, envvar="HPCTUNE_PROFILE",
                     help="Cluster profile (example: hpctune profiles --example)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _slurm_spec(train_args: tuple[str, ...], options: dict[str, Any], dry_run: bool = False):
    """Validate everything (settings, partition, storage, search spec); write nothing. A dry run
    where Slurm is not installed (a laptop, CI) skips the checks against the cluster, with a notice."""
    from hpctune.jobs.submit import node_paths
    from hpctune.run.spec import Resources
    from hpctune.slurm.settings import (
        assume_without_cluster,
        check_container_image,
        check_shared,
        check_storage,
        check_with_cluster,
        resolve,
    )
    from hpctune.yolo.arguments import build_spec

    settings = resolve({key: options.pop(key) for key in CLUSTER_KEYS})
    arguments = spec_arguments(train_args, **options)
    check_storage(arguments["storage"])
    if dry_run and not (shutil.which("sbatch") and shutil.which("sinfo")):
        settings, assumed = assume_without_cluster(settings)
        click.echo(_no_slurm_notice(assumed, settings.container), err=True)
    else:
        settings = check_with_cluster(settings)
        check_container_image(settings)
    # gpu_per_trial and cpus_per_trial are checked against the job's nodes, not this login node
    resources = Resources(cpus=settings.cpus_per_node, gpus=settings.gpus_per_node)
    spec = build_spec(**arguments, resources=resources)
    check_shared({"dataset": spec.data, "dataset root": spec.data_config.get("path"), "model": spec.model,
                  "--python": None if settings.container else settings.python or sys.executable})
    spec.cluster = settings.to_dict()
    if settings.container:
        node_paths(spec)  # every folder the nodes need can be bound (before anything is written)
    return spec, settings


def _no_slurm_notice(assumed: list[str], container: str | None = None) -> str:
    """One line: what a dry run without Slurm could not check, and what its preview assumes."""
    checks = "partition, limit, node-size and container image" if container else "partition, limit and node-size"
    line = f"hpctune: Slurm is not installed here: {checks} checks skipped (--dry-run)"
    return f"{line}; not given, so the preview assumes {', '.join(assumed)}" if assumed else line


@click.command()
@search_options
@cluster_options
@click.option("--dry-run", is_flag=True, help="Print the sbatch script and the resolved spec; submit nothing.")
@user_errors
def submit(train_args: tuple[str, ...], dry_run: bool, **options: Any) -> None:
    """Submit a search as a SLURM job on N nodes, e.g.
    `hpctune submit data=data.yaml epochs=30 --nodes 4 --gpus-per-node 4 --time 1-00:00:00`."""
    from hpctune.api import create_run
    from hpctune.errors import HpctuneError
    from hpctune.jobs import submit as jobs
    from hpctune.slurm.events import SLURM_DIR
    from hpctune.slurm.sbatch import render_submitit

    spec, settings = _slurm_spec(train_args, options, dry_run)
    if dry_run:
        script = render_submitit(settings, jobs.job_name(spec), spec.run_dir / SLURM_DIR,
                                 jobs.python_command(settings.python, settings.container), _run_paths(spec, settings))
        click.echo(script.rstrip("\n"))
        click.echo("# ---- hpctune: resolved spec (--dry-run: nothing submitted, nothing written) ----")
        click.echo(yaml.safe_dump(spec.to_dict(), sort_keys=True).rstrip("\n"))
        return
    rundir = create_run(spec)
    try:
        job = jobs.submit(rundir.path)
    except HpctuneError:
        shutil.rmtree(rundir.path, ignore_errors=True)  # nothing runs it: leave nothing behind
        raise
    _submitted(job, rundir.path)


def _run_paths(spec, settings) -> list[str]:
    """The run's folders to bind into a container (none without one)."""
    from hpctune.jobs.submit import node_paths

    return node_paths(spec) if settings.container else []


def _submitted(job: str, run_dir) -> None:
    click.echo(f"hpctune: submitted job {job}")
    click.echo(f"hpctune: run directory {run_dir}")
    click.echo(f"hpctune: follow it with `hpctune status {run_dir}`")


@click.command(name="sbatch")
@search_options
@cluster_options
@click.option("--dry-run", is_flag=True, help="Print the script; create no run directory.")
@user_errors
def sbatch_script(train_args: tuple[str, ...], dry_run: bool, **options: Any) -> None:
    """Write a standalone sbatch script for the search to stdout (`hpctune sbatch ... > tune.sbatch`).
    Creates the run directory; `sbatch tune.sbatch` runs it, and submitting it again resumes it."""
    from hpctune.api import create_run
    from hpctune.jobs import submit as jobs
    from hpctune.slurm import events
    from hpctune.slurm.sbatch import render_standalone

    spec, settings = _slurm_spec(train_args, options, dry_run)
    script = render_standalone(settings, jobs.job_name(spec), spec.run_dir,
                               jobs.python_command(settings.python, settings.container),
                               run_paths=_run_paths(spec, settings))
    if dry_run:
        click.echo(script, nl=False)
        click.echo("hpctune: --dry-run: no run directory created", err=True)
        return
    rundir = create_run(spec)
    events.record(rundir.path, "scripted", route="sbatch")
    click.echo(script, nl=False)
    click.echo(f"hpctune: run directory {rundir.path}; submit the script with `sbatch` "
               "(submitting it again resumes the run)", err=True)


@click.command()
@click.argument("run_dir", type=click.Path())
@user_errors
def status(run_dir: str) -> None:
    """Where a run stands: its job (squeue/sacct), Ray nodes, requeues and resumes, trials, best so far."""
    from hpctune.jobs.status import collect, render

    for line in render(collect(run_dir)):
        click.echo(line)


@click.command()
@click.argument("run_dir", type=click.Path())
@click.option("--wait", "wait_s", type=click.IntRange(min=0), default=60, show_default=True,
              help="Seconds to let the search stop gracefully before the job is cancelled outright.")
@user_errors
def cancel(run_dir: str, wait_s: int) -> None:
    """Cancel the run's job. The search stops gracefully first (trials keep their epochs, the
    experiment state is saved), and the run stays resumable: `hpctune resume RUN_DIR --submit`."""
    from hpctune.errors import ClusterError
    from hpctune.jobs import submit as jobs
    from hpctune.run.rundir import RunDir

    rundir = RunDir(run_dir)
    rundir.read_manifest()
    active = jobs.active_jobs(rundir)
    if not active:
        raise ClusterError(f"run {rundir.path} has no queued or running job: nothing to cancel")
    for job, state in active:
        click.echo(f"hpctune: cancelling job {job} ({state})")
        how = jobs.cancel_job(rundir, job, state, wait_s)
        click.echo(f"hpctune: job {job} {how}")
    click.echo(f"hpctune: continue the run with `hpctune resume {rundir.path} --submit`")


def resubmit(run_dir: str) -> None:
    """`hpctune resume RUN_DIR --submit`: a new job with the run's own cluster settings."""
    from hpctune.jobs import submit as jobs
    from hpctune.run.rundir import RunDir

    rundir = RunDir(run_dir)
    job = jobs.submit(rundir.path, route="resume")
    _submitted(job, rundir.path)

@click.command()
@click.option("--example", is_flag=True, required=True, help="Print the example profile file.")
def profiles(example: bool) -> None:
    """Print an example cluster profile file (save it as ~/.config/hpctune/profiles.yaml)."""
    from hpctune.slurm.sbatch import TEMPLATES

    click.echo((TEMPLATES / "profiles.example.yaml").read_text().rstrip())


COMMANDS = [submit, sbatch_script, status, cancel, profiles]
