"""The `hpctune` command: parse, call one library function, print. User errors: one line, exit 2."""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from hpctune.errors import HpctuneError, SpecError


def _user_errors(func):
    """Print an HpctuneError as one line and exit 2; nothing else is caught."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except HpctuneError as exc:
            click.echo(f"hpctune: error: {exc}", err=True)
            sys.exit(exc.exit_code)

    return wrapper


def parse_key_values(pairs: tuple[str, ...]) -> dict[str, Any]:
    """`epochs=30 imgsz=128 optimizer=SGD` as `yolo` users type them, values typed like YAML."""
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise SpecError(f"argument '{pair}' is not key=value: write it like epochs=30")
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            value = text
        parsed[key.strip()] = "" if value is None and text.lower() not in {"none", "null", "~"} else value
    return parsed


def search_options(func):
    """Options shared by `tune` and `submit`: Ultralytics' tune() arguments and the search settings."""
    options = [
        click.argument("train_args", nargs=-1, metavar="[KEY=VALUE]..."),
        click.option("--model", default=None, help="Model .yaml or .pt (default yolov8n.yaml)."),
        click.option("--data", default=None, help="Dataset yaml (or folder for classify)."),
        click.option("--space", default=None, type=click.Path(), help="Search space YAML/JSON file."),
        click.option("--epochs", type=int, default=None, help="Epochs per trial = ASHA's max_t (default 100)."),
        click.option("--grace-period", type=int, default=10, show_default=True, help="ASHA's first rung, in epochs."),
        click.option("--reduction-factor", type=int, default=3, show_default=True, help="ASHA keeps 1/N per rung."),
        click.option("--max-samples", type=int, default=10, show_default=True, help="Number of trials."),
        click.option("--gpu-per-trial", type=float, default=None, help="GPUs per trial; 0.25 packs 4 per GPU."),
        click.option("--cpus-per-trial", type=float, default=None, help="CPUs per trial."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampled configurations."),
        click.option("--name", default=None, help="Run name (default tune-DATE-TIME)."),
        click.option("--storage", default="runs/hpctune", show_default=True, help="Folder holding run directories."),
        click.option("--wandb", "use_wandb", is_flag=True, help="Track every trial in Weights & Biases."),
        click.option("--wandb-project", default=None, help="W&B project (default hpctune)."),
        click.option("--wandb-entity", default=None, help="W&B entity (team or user)."),
        click.option("--wandb-group", default=None, help="W&B group (default: the run name)."),
        click.option("--wandb-mode", type=click.Choice(["online", "offline", "auto"]), default="auto",
                     show_default=True, help="auto = offline where the W&B server is unreachable."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def spec_arguments(train_args: tuple[str, ...], **options: Any) -> dict[str, Any]:
    args = parse_key_values(train_args)
    wandb = {key: options.pop(f"wandb_{key}", None) for key in ("project", "entity", "group", "mode")}
    if options.pop("use_wandb", False):
        options["wandb"] = wandb
    for key in ("model", "data"):
        if options.get(key) is None and key in args:
            options[key] = args.pop(key)
    options["model"] = options.get("model") or "yolov8n.yaml"
    return {**options, "train_args": args}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hpctune")
def main() -> None:
    """ASHA hyperparameter search for Ultralytics YOLO with Ray Tune, locally or on SLURM."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("hpctune: %(message)s"))
    logger = logging.getLogger("hpctune")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


@main.command()
@search_options
@click.option("--address", default=None, help="Address of a running Ray cluster (default: a local one).")
@_user_errors
def tune(train_args: tuple[str, ...], address: str | None, **options: Any) -> None:
    """Run a search, e.g. `hpctune tune model=yolov8n.yaml data=data.yaml epochs=30 --max-samples 8`."""
    from hpctune.spec import build_spec

    spec = build_spec(**spec_arguments(train_args, **options))
    _run_new(spec, address)


def _run_new(spec, address: str | None) -> None:
    from hpctune import launch
    from hpctune.api import create_run

    launch.check_local_run(spec, address)
    rundir = create_run(spec)
    click.echo(f"hpctune: run directory {rundir.path}  (resume with: hpctune resume {rundir.path})")
    _print_result(launch.run_search(rundir.path, address=address))


@main.command()
@click.option("--storage", default="runs/hpctune", show_default=True, help="Folder for the dataset and the run.")
@click.option("--name", default=None, help="Run name (default demo-DATE-TIME).")
@click.option("--max-samples", type=int, default=8, show_default=True)
@click.option("--epochs", type=int, default=6, show_default=True)
@click.option("--grace-period", type=int, default=4, show_default=True, help="Scores separate from epoch 4 on.")
@click.option("--seed", type=int, default=0, show_default=True)
@_user_errors
def demo(storage: str, name: str | None, max_samples: int, epochs: int, grace_period: int, seed: int) -> None:
    """Generate a small synthetic dataset and run a real ASHA search on it (CPU, a few minutes)."""
    import time

    from hpctune.demo import demo_spec_arguments, make_demo_dataset
    from hpctune.spec import build_spec

    data = make_demo_dataset(Path(storage).expanduser() / "demo-data")
    click.echo(f"hpctune: demo dataset {data}")
    arguments = demo_spec_arguments(data)
    spec = build_spec(
        **arguments, max_samples=max_samples, epochs=epochs, grace_period=grace_period, seed=seed,
        storage=storage, name=name or time.strftime("demo-%Y%m%d-%H%M%S"),
    )
    _run_new(spec, None)


@main.command()
@click.argument("run_dir", type=click.Path())
@click.option("--address", default=None, help="Address of a running Ray cluster (default: a local one).")
@click.option("--submit", "resubmit", is_flag=True, help="Resubmit as a SLURM job with the run's own settings.")
@_user_errors
def resume(run_dir: str, address: str | None, resubmit: bool) -> None:
    """Continue an interrupted search from its run directory."""
    from hpctune.api import resume as resume_run

    if resubmit:
        cli_slurm.resubmit(run_dir)
        return

    _print_result(resume_run(run_dir, address=address))


@main.command()
@click.argument("run_dir", type=click.Path())
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Also write the best cfg YAML here.")
@_user_errors
def best(run_dir: str, output: str | None) -> None:
    """Print the best configuration of a run; with -o write it as a YOLO cfg file."""
    from hpctune.api import load_run
    from hpctune.rundir import RunDir, atomic_write_text

    result = load_run(run_dir)
    if result.best_trial is None:
        raise HpctuneError(f"run {run_dir} has no finished epoch yet: try again when a trial has reported")
    click.echo(f"best trial {result.best_trial}: {result.metric} = {result.best_metric:.5f}")
    click.echo(yaml.safe_dump(result.best_config, sort_keys=True).rstrip())
    if output:
        best_yaml = RunDir(run_dir).best_yaml
        if not best_yaml.exists():
            raise HpctuneError(f"{best_yaml} is written when the search ends: run `hpctune resume {run_dir}` first")
        atomic_write_text(Path(output), best_yaml.read_text())
        click.echo(f"wrote {output}")


def _print_result(result) -> None:
    done = "finished" if result.finished else "incomplete"
    click.echo(f"hpctune: search {done}; {len(result.table)} trials; results in {result.run_dir}")
    if result.best_trial is not None:
        click.echo(f"best trial {result.best_trial}: {result.metric} = {result.best_metric:.5f}")
        click.echo(f"best hyperparameters: {result.run_dir / 'best_hyperparameters.yaml'}")
        if result.best_weights:
            click.echo(f"best weights: {result.best_weights}")


from hpctune import cli_report, cli_slurm  # noqa: E402,F401  (they register their commands on `main`)

if __name__ == "__main__":
    # `python -m hpctune.cli`: cli_report registered its commands on the imported hpctune.cli, not on __main__.
    from hpctune.cli import main as registered_main

    registered_main()
