"""The SLURM settings of a run: what `hpctune submit` asks for, stored in RunSpec.cluster.

`resolve(options)` merges a profile with the command line and checks what needs no cluster
(numbers, --time, --mem, --sbatch-arg); `check_with_cluster(settings)` then asks Slurm (sbatch on
PATH, the partition, its nodes, CPUs and GPUs) and fills the defaults it decides (CPUs per node,
time limit). Both raise HpctuneError subclasses and write nothing.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from hpctune.errors import ClusterError, SpecError
from hpctune.slurm import queries
from hpctune.slurm.profiles import load_profile
from hpctune.slurm.timelimit import format_time, parse_time

DEFAULT_MAX_REQUEUES = 3  # timeouts of the job's own --time requeued (submitit's default); preemptions always are
DEFAULT_SIGNAL_DELAY_S = 90  # USR2 this long before the time limit: time to stop, save and requeue
DEFAULT_TIME_MIN = 24 * 60  # when neither --time, the profile nor the partition gives one
# sbatch options hpctune sets itself: a --sbatch-arg may not change them.
MANAGED_SBATCH = {
    "nodes", "ntasks", "ntasks-per-node", "cpus-per-task", "gres", "gpus", "gpus-per-node", "time", "signal",
    "output", "error", "open-mode", "partition", "account", "qos", "mem", "constraint", "exclusive", "job-name",
    "requeue", "no-requeue", "array", "wrap",
}
_OWN_OPTIONS = {"nodes", "time", "partition", "account", "qos", "mem", "constraint", "exclusive"}
# Storage a node sees alone: a run directory there is invisible to the other nodes.
NODE_LOCAL = ("/tmp", "/var/tmp", "/dev/shm", "/run/user")


@dataclass
class ClusterSettings:
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_node: int | None = None  # None: the partition's CPUs per node
    mem: str | None = None  # per node, as sbatch --mem takes it (e.g. 64G); None: the cluster's default
    partition: str | None = None  # None: the cluster's default partition
    account: str | None = None
    qos: str | None = None
    time_min: int | None = None  # None: the partition's default (or limit), else one day
    constraint: str | None = None
    exclusive: bool = False
    setup: list[str] = field(default_factory=list)  # shell lines run on every node before Python
    sbatch_args: dict[str, str] = field(default_factory=dict)
    max_requeues: int = DEFAULT_MAX_REQUEUES
    signal_delay_s: int = DEFAULT_SIGNAL_DELAY_S
    profile: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterSettings:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def time(self) -> str | None:
        return None if self.time_min is None else format_time(self.time_min)


def resolve(options: dict[str, Any]) -> ClusterSettings:
    """Profile values under the command line's (None = not given); pure checks only."""
    profile_name, profile = load_profile(options.get("profile"))
    given = {k: v for k, v in options.items() if v is not None and v is not False and v != () and v != []}
    merged = {**profile, **given}
    setup = [*_lines(profile.get("setup")), *_lines(options.get("setup"))]
    sbatch_args = {**_sbatch_args(profile.get("sbatch_args") or {}), **_sbatch_args(options.get("sbatch_args") or ())}
    settings = ClusterSettings(
        nodes=_whole("--nodes", merged.get("nodes", 1), 1),
        gpus_per_node=_whole("--gpus-per-node", merged.get("gpus_per_node", 0), 0),
        cpus_per_node=None if merged.get("cpus_per_node") is None else _whole(
            "--cpus-per-node", merged["cpus_per_node"], 1),
        mem=_mem(merged.get("mem")),
        partition=_name("--partition", merged.get("partition")),
        account=_name("--account", merged.get("account")),
        qos=_name("--qos", merged.get("qos")),
        time_min=None if merged.get("time") is None else parse_time(str(merged["time"])),
        constraint=_one_line("--constraint", merged.get("constraint")),
        exclusive=bool(merged.get("exclusive", False)),
        setup=setup,
        sbatch_args=sbatch_args,
        max_requeues=_whole("--max-requeues", merged.get("max_requeues", DEFAULT_MAX_REQUEUES), 0),
        signal_delay_s=_whole("--signal-delay", merged.get("signal_delay", DEFAULT_SIGNAL_DELAY_S), 10),
        profile=profile_name,
    )
    if settings.time_min is not None and settings.signal_delay_s >= settings.time_min * 60:
        raise SpecError(f"--signal-delay {settings.signal_delay_s} s is not shorter than --time "
                        f"({settings.time_min} min): the stop signal would come before the job starts")
    return settings


def check_with_cluster(settings: ClusterSettings) -> ClusterSettings:
    """Check the settings against the partition Slurm reports; fill CPUs and time from it."""
    queries.require("sbatch")
    part = queries.partition(settings.partition)
    where = f"partition '{part.name}'"
    if settings.nodes > part.nodes:
        raise ClusterError(f"--nodes {settings.nodes} is more than the {part.nodes} node(s) of {where}: "
                           f"use at most {part.nodes}")
    if settings.gpus_per_node > part.gpus_per_node:
        raise ClusterError(f"--gpus-per-node {settings.gpus_per_node} is more than {where} has per node "
                           f"({part.gpus_per_node}): use at most {part.gpus_per_node} or another --partition")
    cpus = settings.cpus_per_node or part.cpus_per_node
    if cpus > part.max_cpus_per_node:
        raise ClusterError(f"--cpus-per-node {cpus} is more than {where} has per node "
                           f"({part.max_cpus_per_node}): use at most {part.max_cpus_per_node}")
    time_min = settings.time_min or _partition_time(part) or DEFAULT_TIME_MIN
    return replace(settings, partition=part.name, cpus_per_node=cpus, time_min=time_min)


def check_storage(path: str | Path, what: str = "the run directory") -> None:
    """Every node of the job reads and writes the run directory: it must not be node-local."""
    resolved = Path(path).expanduser().resolve()
    local = [*NODE_LOCAL]
    tmpdir = os.environ.get("TMPDIR")
    if tmpdir and Path(tmpdir).resolve() != Path("/"):
        local.append(str(Path(tmpdir).resolve()))
    for root in local:
        if resolved == Path(root) or Path(root) in resolved.parents:
            raise SpecError(
                f"storage {resolved} is node-local ({root}): the job's nodes cannot see {what} there; "
                "use --storage on shared storage (home, project or scratch file system)"
            )


def _partition_time(part: queries.Partition) -> int | None:
    for text in (part.default_time, part.time_limit):
        try:
            return parse_time(text)
        except SpecError:
            continue  # "n/a", "infinite", "UNLIMITED"
    return None


def _whole(label: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{label} must be a whole number >= {minimum} (got {value!r})")
    return value


def _mem(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    if not re.fullmatch(r"\d+[KMGT]?B?", text, re.IGNORECASE):
        raise SpecError(f"--mem '{value}' is not a Slurm memory size: write e.g. 64G or 16000M (per node)")
    return text


def _name(label: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    text = str(value)
    if not re.fullmatch(r"[\w.+-]+", text):
        raise SpecError(f"{label} '{text}' is not a Slurm name: letters, digits, '_', '-', '.' only")
    return text


def _lines(value: Any) -> list[str]:
    if value is None:
        return []
    lines = [value] if isinstance(value, str) else list(value)
    for line in lines:
        if not isinstance(line, str) or any(ord(c) < 32 and c != "\t" for c in line) or not line.strip():
            raise SpecError(f"setup line {line!r} must be one non-empty shell line, e.g. --setup 'module load cuda'")
    return [line.strip() for line in lines]


def _sbatch_args(value: Any) -> dict[str, str]:
    """KEY=VALUE pairs (or a mapping from a profile) as extra #SBATCH lines; a bare KEY is a flag."""
    pairs = value.items() if isinstance(value, dict) else (str(v).partition("=")[::2] for v in value)
    args = {}
    for key, text in pairs:
        key = str(key).strip().lstrip("-")
        if not re.fullmatch(r"[a-z][a-z0-9-]*", key):
            raise SpecError(f"--sbatch-arg '{key}' is not an sbatch option name: write e.g. --sbatch-arg mail-type=END")
        if key in MANAGED_SBATCH:
            own = f"use --{key} instead" if key in _OWN_OPTIONS else "hpctune needs its own value there"
            raise SpecError(f"--sbatch-arg {key} is set by hpctune: {own}")
        args[key] = _one_line(f"--sbatch-arg {key}", "" if text is None else str(text)) or ""
    return args


def _one_line(label: str, value: Any) -> str | None:
    """A value that goes into an #SBATCH line: one line, printable, bounded (a newline would inject commands
    into the script and end sbatch's reading of its #SBATCH lines)."""
    if value is None or value == "":
        return None
    text = str(value)
    if len(text) > 200 or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise SpecError(f"{label} {text[:40]!r}... must be one printable line of at most 200 characters")
    return text
