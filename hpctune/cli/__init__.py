"""The `hpctune` command line: one group, its commands added from one module per kind of work."""

from hpctune.cli import runs, search, slurm
from hpctune.cli.main import main

for _module in (search, slurm, runs):
    for _command in _module.COMMANDS:
        main.add_command(_command)

__all__ = ["main"]
