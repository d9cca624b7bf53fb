"""Cluster profiles: the partition, account, qos and setup lines of a cluster, named once.

Two YAML files, read in this order, the later one winning key by key:

    user level     $HPCTUNE_PROFILES, else ${XDG_CONFIG_HOME:-~/.config}/hpctune/profiles.yaml
    project level  ./hpctune-profiles.yaml (the folder `hpctune` runs in)

A profile's setup lines run as you on every node, so a file you did not write must not choose one:
the project file's `default:` is ignored, and its profiles are used only when named with --profile.
The profile used and the files it came from are always logged.

    default: juwels            # optional: the profile used when --profile is not given
    profiles:
      juwels:
        partition: booster
        account: myproject
        setup: ["module load CUDA/12", "source /project/me/venv/bin/activate"]
        python: python         # the job's Python, found on PATH after the setup lines
      containers:
        setup: ["module load apptainer"]
        container: /project/me/hpctune.sif   # every node's Python runs in this image (python3 in it)
        binds: [/scratch/me/datasets]        # besides the run's storage, dataset and model folders

`hpctune profiles --example` prints an example with every key. Command-line options win over a profile.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import yaml

from hpctune.errors import SpecError

log = logging.getLogger(__name__)

PROJECT_FILE = "hpctune-profiles.yaml"
KEYS = {
    "partition", "account", "qos", "nodes", "gpus_per_node", "gpu_type", "cpus_per_node", "mem", "time", "constraint",
    "exclusive", "setup", "python", "container", "container_runtime", "binds", "sbatch_args", "max_requeues",
    "signal_delay",
}


def profile_files(cwd: Path | None = None) -> list[Path]:
    """The profile files that apply here, user level first."""
    user = os.environ.get("HPCTUNE_PROFILES")
    if user:
        user_file = Path(user).expanduser()
    else:
        config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        user_file = config / "hpctune" / "profiles.yaml"
    return [user_file, (cwd or Path.cwd()) / PROJECT_FILE]


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"profile file {path} is not valid YAML ({exc.__class__.__name__}): fix or remove it") from None
    if not isinstance(data, dict) or not isinstance(data.get("profiles", {}), dict):
        raise SpecError(f"profile file {path} must hold 'profiles: {{NAME: {{partition: ...}}}}': see "
                        "`hpctune profiles --example`")
    return data


def load_profile(name: str | None, files: list[Path] | None = None) -> tuple[str | None, dict[str, Any]]:
    """The named profile (or the files' default) merged over all files; ({}, None) when none applies."""
    files = profile_files() if files is None else files
    merged: dict[str, dict[str, Any]] = {}
    sources: dict[str, list[str]] = {}
    default = None
    for index, path in enumerate(files):
        data = _read(path)
        if index == 0:  # only the user's own file may choose a profile unasked
            default = data.get("default", default)
        for profile, values in (data.get("profiles") or {}).items():
            if not isinstance(values, dict):
                raise SpecError(f"profile '{profile}' in {path} must be a mapping of settings, e.g. partition: gpu")
            unknown = sorted(set(values) - KEYS)
            if unknown:
                raise SpecError(f"profile '{profile}' in {path} has unknown key '{unknown[0]}': use "
                                f"{', '.join(sorted(KEYS))}")
            if "time" in values and not isinstance(values["time"], str):
                raise SpecError(f"profile '{profile}' in {path}: time {values['time']!r} is not a Slurm time "
                                "(YAML reads an unquoted 12:00:00 as a number): quote it, e.g. time: '12:00:00'")
            merged.setdefault(str(profile), {}).update(values)
            sources.setdefault(str(profile), []).append(str(path))
    chosen = name or default
    if chosen is None:
        return None, {}
    if chosen not in merged:
        known = ", ".join(sorted(merged)) or "none"
        where = " or ".join(str(p) for p in files)
        raise SpecError(f"unknown profile '{chosen}' (known: {known}): define it in {where}")
    log.info("cluster profile '%s' from %s%s", chosen, " and ".join(sources[chosen]), "" if name else " (its default)")
    return str(chosen), dict(merged[chosen])
