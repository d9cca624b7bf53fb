"""The environment for commands against the local Slurm cluster (scripts/slurm-cluster-up.sh writes
ENV_FILE): shared by the tests (tests/slurm_helpers.py) and the benchmarks that submit jobs."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

ENV_FILE = Path("/var/lib/hpctune-test-slurm/env")


def cluster_env() -> dict[str, str]:
    """This process's environment plus the cluster's (SLURM_CONF, node names), minus any SLURM_*/RAY_*
    of a job this process might itself run in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RAY_"))}
    for line in ENV_FILE.read_text().splitlines():
        m = re.match(r"\s*export\s+(\w+)=(.*)$", line)
        if m:
            env[m.group(1)] = shlex.split(m.group(2))[0] if m.group(2) else ""
    # its nodes list fake GPUs, so a job must say how many it wants: none unless a command asks
    env.setdefault("HPCTUNE_GPUS_PER_NODE", "0")
    return env
