"""What every hpctune command shares: user errors as one line and exit 2, key=value arguments, the search options."""

from __future__ import annotations

import functools
import sys
from typing import Any

import click
import yaml

from hpctune.errors import HpctuneError, SpecError


def user_errors(func):
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
        click.option("--space", default=None,
                     help="Search space: ultralytics (default, Ultralytics' Ray space), seed, or a YAML/JSON file."),
        click.option("--search", "search_alg", type=click.Choice(["auto", "evolve", "tpe", "optuna", "random"]),
                     default=None, help="Search algorithm (default auto: evolve below 30 trials, tpe from 30). "
                     "tpe = optuna: Optuna's multivariate TPE."),
        click.option("--metric", default=None, help="Metric to maximise: mAP50-95 (default), mAP50, fitness; "
                     "top1/top5 for classify."),
        click.option("--epochs", type=int, default=None, help="Epochs per trial = ASHA's max_t (default 100)."),
        click.option("--grace-period", type=int, default=10, show_default=True, help="ASHA's first rung, in epochs."),
        click.option("--reduction-factor", type=int, default=3, show_default=True, help="ASHA keeps 1/N per rung."),
        click.option("--max-samples", "--iterations", "max_samples", type=int, default=None,
                     help="Number of trials, the first one the baseline (iterations: Ultralytics' name); "
                          "default 10, or as many as --time-budget allows."),
        click.option("--time-budget", default=None, metavar="D-HH:MM:SS",
                     help="Keep starting trials while a new one can still reach ASHA's first rung in this time "
                          "(per job run; the final training's expected time is kept free)."),
        click.option("--gpu-per-trial", type=float, default=None, help="GPUs per trial; 0.25 packs 4 per GPU."),
        click.option("--cpus-per-trial", type=float, default=None, help="CPUs per trial."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of the searcher and of every trial's training."),
        click.option("--warm-start", default=None, metavar="RUN_DIR",
                     help="Let the searcher first learn from an earlier run's trials (same space keys and metric)."),
        click.option("--final-epochs", type=int, default=0, help="After the search, train the best configuration "
                     "this many epochs (0: no final training)."),
        click.option("--final-top-k", type=int, default=1, show_default=True,
                     help="How many of the best configurations the final training trains."),
        click.option("--name", default=None, help="Run name (default tune-DATE-TIME)."),
        click.option("--storage", default="runs/hpctune", show_default=True, envvar="HPCTUNE_STORAGE",
                     help="Folder holding run directories."),
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


def grow_options(func):
    """Options of `resume` that grow a search (hpctune.api.grow_run); kept in the run's manifest."""
    options = [
        click.option("--max-samples", "--iterations", "max_samples", type=int, default=None, metavar="N",
                     help="Trials in all, the ones already created included: an interrupted or finished search "
                          "goes on to N from what its searcher learnt; kept for later resumes."),
        click.option("--time-budget", default=None, metavar="D-HH:MM:SS",
                     help="Keep starting trials while a new one can still reach ASHA's first rung in this time "
                          "(per job run); without --max-samples the budget alone decides how many."),
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
