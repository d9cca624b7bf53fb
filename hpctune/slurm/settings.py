"""The SLURM settings of a run: what `hpctune submit` asks for, stored in RunSpec.cluster.

`resolve(options)` merges a profile with the command line and checks what needs no cluster
(numbers, --time, --mem, --gpu-type, --python, --container, --bind, --sbatch-arg); `check_with_cluster(settings)`
then asks Slurm (sbatch on PATH, the partition, its nodes, CPUs, memory, GPUs and time limits) and fills the defaults
it decides (GPUs, CPUs and memory per node, time limit: see limits.py). Both raise HpctuneError
subclasses and write nothing; `assume_without_cluster` fills the same defaults for a dry run where
Slurm is not installed. `check_container_image` checks, where the cluster is checked, that a --container file exists.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from hpctune.errors import ClusterError, SpecError
from hpctune.slurm import limits, queries
from hpctune.slurm.profiles import load_profile
from hpctune.slurm.timelimit import format_time, parse_time

log = logging.getLogger(__name__)

DEFAULT_MAX_REQUEUES = 3  # timeouts of the job's own --time requeued (submitit's default); preemptions always are
DEFAULT_SIGNAL_DELAY_S = 90  # USR2 this long before the time limit: time to stop, save and requeue
DEFAULT_TIME_MIN = limits.DEFAULT_TIME_MIN  # when neither --time, the profile nor the partition gives one
PREVIEW_CPUS_PER_GPU = 8  # a dry run without Slurm knows no node sizes: CPUs per node it shows per GPU
# sbatch options hpctune sets itself: a --sbatch-arg may not change them.
MANAGED_SBATCH = {
    "nodes", "ntasks", "ntasks-per-node", "cpus-per-task", "gres", "gpus", "gpus-per-node", "time", "signal",
    "output", "error", "open-mode", "partition", "account", "qos", "mem", "constraint", "exclusive", "job-name",
    "requeue", "no-requeue", "array", "wrap",
}
_OWN_OPTIONS = {"nodes", "time", "partition", "account", "qos", "mem", "constraint", "exclusive"}
_GPU_OPTIONS = {"gres", "gpus", "gpus-per-node"}
# An interpreter is a path or a command name: no spaces or shell syntax, so it is one word in every script.
_PYTHON = re.compile(r"[\w./+@:,-]+")
_PYTHON_MAX = 512
_GPU_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a Slurm GRES type: a100, a100_3g.20gb, h100-80gb
# Storage a node sees alone: a run directory there is invisible to the other nodes.
NODE_LOCAL = ("/tmp", "/var/tmp", "/dev/shm", "/run/user")
CONTAINER_RUNTIMES = ("apptainer", "singularity")  # the same `exec --nv --bind` syntax; singularity: older sites
# Images Apptainer runs: a SIF file, or a URI it pulls and converts (into its cache, ~/.apptainer/cache).
_IMAGE_URI = re.compile(r"(?:docker|oras|library)://[A-Za-z0-9][\w./:@+-]*")
# A path in a script and in Apptainer's --bind list: ',' and ':' separate bind specs, so neither may occur.
_PATH_WORD = re.compile(r"/[\w.+@-][\w./+@-]*")
_PATH_MAX = 512
_BINDS_MAX = 32


@dataclass
class ClusterSettings:
    nodes: int = 1
    gpus_per_node: int | None = None  # None: not given (an error on a GPU partition); 0: a CPU job
    gpu_type: str | None = None  # a GRES type (a100): --gres=gpu:a100:N; None: any GPU
    cpus_per_node: int | None = None  # None: the GPUs' share of a node (a whole node's without GPUs or exclusive)
    mem: str | None = None  # per node, as sbatch --mem takes it (e.g. 64G); None: the GPUs' share, else the cluster's
    partition: str | None = None  # None: the cluster's default partition
    account: str | None = None
    qos: str | None = None
    time_min: int | None = None  # None: the partition's DefaultTime, else one hour (limits.DEFAULT_TIME_MIN)
    constraint: str | None = None
    exclusive: bool = False
    setup: list[str] = field(default_factory=list)  # shell lines run on every node before Python
    python: str | None = None  # the job's interpreter, found on the node after the setup lines; None: this one's
    container: str | None = None  # an Apptainer image (.sif path or docker:// oras:// library:// URI) Python runs in
    container_runtime: str = "apptainer"
    binds: list[str] = field(default_factory=list)  # extra SRC[:DST[:ro|rw]] besides the run's own folders
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

    @property
    def gres(self) -> str | None:
        """sbatch's --gres value: gpu[:TYPE]:N. Not --gpus-per-node=TYPE:N: Slurm documents --gres as a
        per-node request under every select plugin, while --gpus-per-node came with select/cons_tres and
        is refused ("Invalid generic resource specification") where that plugin is not configured."""
        if not self.gpus_per_node:
            return None
        return f"gpu:{self.gpu_type}:{self.gpus_per_node}" if self.gpu_type else f"gpu:{self.gpus_per_node}"


def resolve(options: dict[str, Any]) -> ClusterSettings:
    """Profile values under the command line's (None = not given); pure checks only."""
    profile_name, profile = load_profile(options.get("profile"))
    # False counts as given: --no-exclusive overrides a profile's exclusive: true
    given = {k: v for k, v in options.items() if v is not None and v != () and v != []}
    merged = {**profile, **given}
    setup = [*_lines(profile.get("setup")), *_lines(options.get("setup"))]
    sbatch_args = {**_sbatch_args(profile.get("sbatch_args") or {}), **_sbatch_args(options.get("sbatch_args") or ())}
    settings = ClusterSettings(
        nodes=_whole("--nodes", merged.get("nodes", 1), 1),
        gpus_per_node=None if merged.get("gpus_per_node") is None else _whole(
            "--gpus-per-node", merged["gpus_per_node"], 0),
        gpu_type=_gpu_type(merged.get("gpu_type")),
        cpus_per_node=None if merged.get("cpus_per_node") is None else _whole(
            "--cpus-per-node", merged["cpus_per_node"], 1),
        mem=_mem(merged.get("mem")),
        partition=_name("--partition", merged.get("partition")),
        account=_name("--account", merged.get("account")),
        qos=_name("--qos", merged.get("qos")),
        time_min=None if merged.get("time") is None else parse_time(str(merged["time"])),
        constraint=_one_line("--constraint", merged.get("constraint")),
        exclusive=_flag("--exclusive", merged.get("exclusive", False)),
        setup=setup,
        python=_python(merged.get("python")),
        container=_container(merged.get("container")),
        container_runtime=_runtime(merged.get("container_runtime") or "apptainer"),
        binds=_binds([*_listed(profile.get("binds")), *_listed(options.get("binds"))]),
        sbatch_args=sbatch_args,
        max_requeues=_whole("--max-requeues", merged.get("max_requeues", DEFAULT_MAX_REQUEUES), 0),
        signal_delay_s=_whole("--signal-delay", merged.get("signal_delay", DEFAULT_SIGNAL_DELAY_S), 10),
        profile=profile_name,
    )
    if settings.gpu_type is not None and settings.gpus_per_node == 0:
        raise SpecError(f"--gpu-type {settings.gpu_type} with --gpus-per-node 0 asks for no GPUs: "
                        "pass --gpus-per-node N, or leave --gpu-type out")
    if settings.binds and not settings.container:
        raise SpecError(f"--bind {settings.binds[0]} binds into no container: give --container IMAGE, or leave "
                        "--bind (and the profile's binds) out")
    _check_signal_delay(settings)
    return settings


def check_with_cluster(settings: ClusterSettings) -> ClusterSettings:
    """Check the settings against the partition Slurm reports; fill GPUs, CPUs, memory and time from it."""
    queries.require("sbatch")
    return fit_to_partition(settings, queries.partition(settings.partition))


def fit_to_partition(settings: ClusterSettings, part: queries.Partition) -> ClusterSettings:
    """The settings checked against `part`, with what was not given decided from it (each decision
    logged in one line)."""
    where = f"partition '{part.name}'"
    if settings.nodes > part.nodes:
        raise ClusterError(f"--nodes {settings.nodes} is more than the {part.nodes} node(s) of {where}: "
                           f"use at most {part.nodes}")
    gpus = limits.requested_gpus(settings.gpus_per_node, settings.gpu_type, part)
    cpus, mem = _cpus_and_mem(replace(settings, gpus_per_node=gpus), part)
    if cpus > part.max_cpus_per_node:
        raise ClusterError(f"--cpus-per-node {cpus} is more than {where} has per node "
                           f"({part.max_cpus_per_node}): use at most {part.max_cpus_per_node}")
    time_min, why = limits.job_time(settings.time_min, part)
    if why:
        log.info(why)
    fitted = replace(settings, partition=part.name, gpus_per_node=gpus, cpus_per_node=cpus, mem=mem,
                     time_min=time_min)
    _check_signal_delay(fitted)
    return fitted


def _cpus_and_mem(settings: ClusterSettings, part: queries.Partition) -> tuple[int, str | None]:
    """CPUs and memory per node: the user's; else a whole node's CPUs when exclusive or without GPUs;
    else the GPUs' share of a node (limits.gpu_share)."""
    cpus, mem = settings.cpus_per_node, settings.mem
    share = None if settings.exclusive else limits.gpu_share(part, settings.gpus_per_node or 0, settings.gpu_type)
    if share is None:
        return cpus or part.cpus_per_node, mem
    chosen = []
    if cpus is None:
        cpus = share.cpus
        chosen.append(f"{cpus} CPUs")
    if mem is None and share.mem_mb:
        mem = f"{share.mem_mb}M"
        chosen.append(f"{mem} memory")
    if chosen:
        log.info("%s of the %s GPUs per node of partition '%s': asking for %s per node, their share of a node "
                 "(--cpus-per-node, --mem or --exclusive to change)", settings.gpus_per_node, part.gpus_per_node,
                 part.name, " and ".join(chosen))
    return cpus, mem


def assume_without_cluster(settings: ClusterSettings) -> tuple[ClusterSettings, list[str]]:
    """A dry run where Slurm is not installed: what was given, and for the rest the values the preview
    shows (with words saying so), since no node sizes or partition limits are known."""
    assumed = []
    gpus = settings.gpus_per_node or 0
    if settings.gpus_per_node is None:
        assumed.append("0 GPUs per node (--gpus-per-node)")
    cpus = settings.cpus_per_node
    if cpus is None:
        cpus = max(1, gpus) * PREVIEW_CPUS_PER_GPU
        assumed.append(f"{cpus} CPUs per node (--cpus-per-node)")
    if settings.mem is None:
        assumed.append("the cluster's default memory (--mem)")
    time_min = settings.time_min
    if time_min is None:
        time_min = DEFAULT_TIME_MIN
        assumed.append(f"time {format_time(time_min)} (--time)")
    fitted = replace(settings, gpus_per_node=gpus, cpus_per_node=cpus, time_min=time_min)
    _check_signal_delay(fitted)
    return fitted, assumed


def _check_signal_delay(settings: ClusterSettings) -> None:
    if settings.time_min is not None and settings.signal_delay_s >= settings.time_min * 60:
        raise SpecError(f"--signal-delay {settings.signal_delay_s} s is not shorter than --time "
                        f"({settings.time_min} min): the stop signal would come before the job starts")


def check_storage(path: str | Path, what: str = "the run directory") -> None:
    """Every node of the job reads and writes the run directory: it must not be node-local."""
    resolved = Path(path).expanduser().resolve()
    root = node_local_root(resolved)
    if root:
        raise SpecError(
            f"storage {resolved} is node-local ({root}): the job's nodes cannot see {what} there; "
            "use --storage on shared storage (home, project or scratch file system)"
        )


def check_shared(paths: dict[str, str | None]) -> None:
    """Each file the job's nodes read (`label: path`; relative names such as a shipped model are skipped)
    must not be in a node-local folder of this login node."""
    for label, path in paths.items():
        if not path or not Path(path).is_absolute():
            continue
        root = node_local_root(Path(path).resolve())
        if root:
            raise SpecError(f"{label} {path} is node-local ({root}): the job's other nodes cannot read it there; "
                            "move it to shared storage (home, project or scratch file system)")


def node_local_root(path: Path) -> str | None:
    """The node-local folder (/tmp, $TMPDIR, ...) that holds `path`, or None where other nodes may see it."""
    local = [*NODE_LOCAL]
    tmpdir = os.environ.get("TMPDIR")
    if tmpdir and Path(tmpdir).resolve() != Path("/"):
        local.append(str(Path(tmpdir).resolve()))
    return next((root for root in local if path == Path(root) or Path(root) in path.parents), None)


def check_container_image(settings: ClusterSettings) -> None:
    """A --container file must exist here, on the login node that sees the same shared storage as the job's
    nodes (a URI is pulled on the node; the job's preflight checks the file again there)."""
    image = settings.container
    if image and "://" not in image and not Path(image).is_file():
        raise SpecError(f"--container {image} not found: build it (e.g. apptainer build {Path(image).name} "
                        "hpctune.def) or give the path of an existing .sif file")


def _whole(label: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{label} must be a whole number >= {minimum} (got {value!r})")
    return value


def _flag(label: str, value: Any) -> bool:
    if not isinstance(value, bool):  # a profile's "no" or "false" in quotes would be true
        raise SpecError(f"{label} must be true or false (got {value!r}): write e.g. exclusive: true in a profile")
    return value


def _gpu_type(value: Any) -> str | None:
    if value is None or value == "":
        return None
    text = str(value)
    if not _GPU_TYPE.fullmatch(text) or text.isdigit():
        raise SpecError(f"--gpu-type {text[:40]!r} is not a GPU type: letters, digits, '_', '-', '.' only, at most "
                        "64 characters, as `sinfo -o %G` lists them (gpu:TYPE:N), e.g. --gpu-type a100")
    return text


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


def _python(value: Any) -> str | None:
    """--python: a path (made absolute here: the job may start in another folder) or a command name
    that PATH finds on the node once the setup lines ran (`python` after `source .../activate`)."""
    if value is None or value == "":
        return None
    raw = str(value)
    fix = ("give a path or a command name, e.g. --python /project/me/venv/bin/python, or --python python "
           "after --setup 'source /project/me/venv/bin/activate'")
    if len(raw) > _PYTHON_MAX or any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise SpecError(f"--python {raw[:40]!r} must be one printable line of at most {_PYTHON_MAX} characters: {fix}")
    text = os.path.abspath(os.path.expanduser(raw)) if "/" in raw or raw.startswith("~") else raw
    for word in (raw.removeprefix("~"), text):
        if not _PYTHON.fullmatch(word) or word.startswith("-") or not word.strip("."):
            shown = raw if word != text else text
            raise SpecError(f"--python {shown[:60]!r} is not a path or a command name (letters, digits and "
                            f"_ . / + - @ : , only; no spaces or shell syntax): {fix}")
    return text


def _printable(label: str, raw: str, fix: str) -> None:
    if len(raw) > _PATH_MAX or any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise SpecError(f"{label} {raw[:40]!r} must be one printable line of at most {_PATH_MAX} characters: {fix}")


def _container(value: Any) -> str | None:
    """--container: a .sif file (made absolute here; not node-local: every node runs it) or an image URI."""
    if value is None or value == "":
        return None
    raw = str(value)
    fix = ("give a .sif file on shared storage or a docker://, oras:// or library:// URI, e.g. "
           "--container /project/me/hpctune.sif")
    _printable("--container", raw, fix)
    if "://" in raw:
        if not _IMAGE_URI.fullmatch(raw):
            raise SpecError(f"--container {raw[:60]!r} is not an image URI (docker://, oras:// or library:// and "
                            f"letters, digits, _ . / : @ + - only): {fix}")
        return raw
    path = os.path.abspath(os.path.expanduser(raw))
    if not path.endswith(".sif") or not _PATH_WORD.fullmatch(path):
        raise SpecError(f"--container {raw[:60]!r} is not a .sif file path (letters, digits and _ . / + - @ "
                        f"only; no spaces or shell syntax): {fix}")
    local = node_local_root(Path(path))
    if local:
        raise SpecError(f"--container {path} is node-local ({local}): the job's other nodes cannot see it; {fix}")
    return path


def _runtime(value: Any) -> str:
    if value not in CONTAINER_RUNTIMES:
        raise SpecError(f"--container-runtime {str(value)[:40]!r} is not apptainer or singularity: leave it out for "
                        "apptainer, or give singularity where only Singularity is installed")
    return str(value)


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _binds(values: list[Any]) -> list[str]:
    if len(values) > _BINDS_MAX:
        raise SpecError(f"{len(values)} binds are more than {_BINDS_MAX}: bind a common parent folder instead")
    return list(dict.fromkeys(_bind(str(value)) for value in values))


def _bind(raw: str) -> str:
    """--bind SRC[:DST[:ro|rw]], Apptainer's bind spec: SRC made absolute here (the job may start in another
    folder), DST an absolute path in the container; the options only with a DST."""
    fix = "write SRC[:DST[:ro]] with absolute paths, e.g. --bind /scratch/me/data or --bind /scratch/me/data:/data:ro"
    _printable("--bind", raw, fix)
    parts = raw.split(":")
    if len(parts) > 3 or not parts[0]:
        raise SpecError(f"--bind {raw[:60]!r} is not SRC[:DST[:OPTS]]: {fix}")
    src = os.path.abspath(os.path.expanduser(parts[0]))
    for path in (src, *parts[1:2]):
        if not _PATH_WORD.fullmatch(path):
            raise SpecError(f"--bind {raw[:60]!r}: {path[:60]!r} is not an absolute path of letters, digits and "
                            f"_ . / + - @ (no spaces, commas or shell syntax): {fix}")
    if len(parts) == 3 and parts[2] not in {"ro", "rw"}:
        raise SpecError(f"--bind {raw[:60]!r}: options {parts[2][:20]!r} are not ro or rw: {fix}")
    return ":".join([src, *parts[1:]])


def _sbatch_args(value: Any) -> dict[str, str]:
    """KEY=VALUE pairs (or a mapping from a profile) as extra #SBATCH lines; a bare KEY is a flag."""
    pairs = value.items() if isinstance(value, dict) else (str(v).partition("=")[::2] for v in value)
    args = {}
    for key, text in pairs:
        key = str(key).strip().lstrip("-")
        if not re.fullmatch(r"[a-z][a-z0-9-]*", key):
            raise SpecError(f"--sbatch-arg '{key}' is not an sbatch option name: write e.g. --sbatch-arg mail-type=END")
        if key in MANAGED_SBATCH:
            raise SpecError(f"--sbatch-arg {key} is set by hpctune: {_managed_fix(key, text)}")
        args[key] = _one_line(f"--sbatch-arg {key}", "" if text is None else str(text)) or ""
    return args


def _managed_fix(key: str, value: Any) -> str:
    """What to pass instead of an sbatch option hpctune sets itself."""
    if key in _OWN_OPTIONS:
        return f"use --{key} instead"
    if key == "cpus-per-task":
        return "use --cpus-per-node instead (one task per node)"
    if key in _GPU_OPTIONS:
        text = str(value or "").strip()
        count = re.fullmatch(r"(?:gpu:)?(\d+)", text)
        if count:
            return f"use --gpus-per-node {count.group(1)} instead"
        typed = re.fullmatch(r"(?:gpu:)?([A-Za-z][\w.-]*):(\d+)", text)
        if typed:
            return f"use --gpus-per-node {typed.group(2)} --gpu-type {typed.group(1)} instead"
        return "use --gpus-per-node N instead, with --gpu-type TYPE for typed GPUs (e.g. --gpu-type a100)"
    return "hpctune needs its own value there"


def _one_line(label: str, value: Any) -> str | None:
    """A value that goes into an #SBATCH line: one line, printable, bounded (a newline would inject commands
    into the script and end sbatch's reading of its #SBATCH lines)."""
    if value is None or value == "":
        return None
    text = str(value)
    if len(text) > 200 or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise SpecError(f"{label} {text[:40]!r}... must be one printable line of at most 200 characters")
    return text
