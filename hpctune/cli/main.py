"""The `hpctune` command group: parse, call one library function, print. Commands are added in __init__."""

from __future__ import annotations

import logging

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hpctune")
def main() -> None:
    """ASHA hyperparameter search for Ultralytics YOLO with Ray Tune, locally or on SLURM."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("hpctune: %(message)s"))
    logger = logging.getLogger("hpctune")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
