"""Commands that run a search here: tune, demo, resume, best, train."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from hpctune.cli.options import grow_options, search_options, spec_arguments, user_errors
from hpctune.errors import HpctuneError


@click.command()
@search_options
@click.option("--address", default=None, help="Address of a running Ray cluster (default: a local one).")
@user_errors
def tune(train_args: tuple[str, ...], address: str | None, **options: Any) -> None:
    """Run a search, e.g. `hpctune tune model=yolov8n.yaml data=data.yaml epochs=30 --max-samples 8`."""
    from hpctune.yolo.arguments import build_spec

    spec = build_spec(**spec_arguments(train_args, **options))
    _run_new(spec, address)


def _run_new(spec, address: str | None) -> None:
    from hpctune.api import create_run
    from hpctune.jobs import local

    local.check_local_run(spec, address)
    rundir = create_run(spec)
    click.echo(f"hpctune: run directory {rundir.path}  (resume with: hpctune resume {rundir.path})")
    _print_result(local.run_search(rundir.path, address=address))


@click.command()
@click.option("--storage", default="runs/hpctune", show_default=True, help="Folder for the dataset and the run.")
@click.option("--name", default=None, help="Run name (default demo-DATE-TIME).")
@click.option("--max-samples", type=int, default=8, show_default=True)
@click.option("--epochs", type=int, default=6, show_default=True)
@click.option("--grace-period", type=int, default=4, show_default=True, help="Scores separate from epoch 4 on.")
@click.option("--seed", type=int, default=0, show_default=True)
@user_errors
def demo(storage: str, name: str | None, max_samples: int, epochs: int, grace_period: int, seed: int) -> None:
    """Generate a small synthetic dataset and run a real ASHA search on it (CPU, a few minutes)."""
    import time

    from hpctune.yolo.arguments import build_spec
    from hpctune.yolo.demo import demo_spec_arguments, make_demo_dataset

    data = make_demo_dataset(Path(storage).expanduser() / "demo-data")
    click.echo(f"hpctune: demo dataset {data}")
    arguments = demo_spec_arguments(data)
    spec = build_spec(
        **arguments, max_samples=max_samples, epochs=epochs, grace_period=grace_period, seed=seed,
        storage=storage, name=name or time.strftime("demo-%Y%m%d-%H%M%S"),
    )
    _run_new(spec, None)


@click.command()
@click.argument("run_dir", type=click.Path())
@click.option("--address", default=None, help="Address of a running Ray cluster (default: a local one).")
@click.option("--submit", "resubmit", is_flag=True, help="Resubmit as a SLURM job with the run's own settings.")
@grow_options
@user_errors
def resume(run_dir: str, address: str | None, resubmit: bool, max_samples: int | None,
           time_budget: str | None) -> None:
    """Continue an interrupted search from its run directory; --max-samples or --time-budget grows an
    interrupted or finished one."""
    from hpctune.api import grow_run
    from hpctune.api import resume as resume_run
    from hpctune.run.rundir import RunDir

    if resubmit:
        from hpctune.cli.slurm import resubmit

        if max_samples is not None or time_budget is not None:
            grow_run(RunDir(run_dir), max_samples=max_samples, time_budget=time_budget)  # the job reads the manifest
        resubmit(run_dir)
        return

    _print_result(resume_run(run_dir, address=address, max_samples=max_samples, time_budget=time_budget))


@click.command()
@click.argument("run_dir", type=click.Path())
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Also write the best cfg YAML here.")
@user_errors
def best(run_dir: str, output: str | None) -> None:
    """Print the best configuration of a run; with -o write it as a YOLO cfg file."""
    from hpctune.api import load_run
    from hpctune.run.rundir import RunDir, atomic_write_text

    result = load_run(run_dir)
    if result.best_trial is None:
        raise HpctuneError(f"run {run_dir} has no finished epoch yet: try again when a trial has reported")
    click.echo(f"best trial {result.best_trial}: {result.metric} = {result.best_metric:.5f}")
    if result.gain_line():
        click.echo(f"# {result.gain_line()} (baseline trial {result.baseline_trial})")
    if result.final_line():
        click.echo(f"# {result.final_line()}; weights {result.final_weights}")
    click.echo(yaml.safe_dump(result.best_config, sort_keys=True).rstrip())
    if output:
        best_yaml = RunDir(run_dir).best_yaml
        if not best_yaml.exists():
            raise HpctuneError(f"{best_yaml} is written when the search ends: run `hpctune resume {run_dir}` first")
        atomic_write_text(Path(output), best_yaml.read_text())
        click.echo(f"wrote {output}")


INCOMPLETE_EXIT = 3  # the search stopped before its end (interrupted, or trials failed to start): resume it


def _print_result(result) -> None:
    """Print what the search found; exit INCOMPLETE_EXIT when it did not finish, so a batch script (or any
    caller) sees it: a job whose search stopped early must not end COMPLETED."""
    done = "finished" if result.finished else "incomplete"
    click.echo(f"hpctune: search {done}; {len(result.table)} trials; results in {result.run_dir}")
    if result.best_trial is not None:
        click.echo(f"best trial {result.best_trial}: {result.metric} = {result.best_metric:.5f}")
        if result.gain_line():
            click.echo(f"hpctune: {result.gain_line()} (baseline: your arguments, untuned)")
        click.echo(f"best hyperparameters: {result.run_dir / 'best_hyperparameters.yaml'}")
        if result.best_weights:
            click.echo(f"best weights: {result.best_weights}")
    if result.final_line():
        click.echo(f"hpctune: {result.final_line()}")
        if result.final_weights:
            click.echo(f"final weights: {result.final_weights}")
    if not result.finished:
        from hpctune.run.rundir import RunDir

        log = RunDir(result.run_dir).log_file
        where = f"its log: {log}" if log.exists() else "it wrote no log: see the output above"
        click.echo(f"hpctune: the search did not finish ({where}): continue it with "
                   f"`hpctune resume {result.run_dir}`", err=True)
        raise SystemExit(INCOMPLETE_EXIT)


@click.command()
@click.argument("run_dir", type=click.Path())
@click.option("--epochs", type=int, required=True, help="Epochs of the final training.")
@click.option("--top-k", type=int, default=1, show_default=True, help="How many of the best configurations.")
@click.option("--address", default=None, help="Address of a running Ray cluster (default: a local one).")
@user_errors
def train(run_dir: str, epochs: int, top_k: int, address: str | None) -> None:
    """Train the best configuration(s) of a search at full length (RUN_DIR/final/); resumable."""
    from hpctune.api import train as train_best

    _print_result(train_best(run_dir, epochs=epochs, top_k=top_k, address=address))


COMMANDS = [tune, demo, resume, best, train]
