"""Questions to Slurm through its own commands (sinfo, squeue, sacct, scontrol, scancel).

Each function runs one command and parses its output; a missing command or a refusal is a
ClusterError that says what to do. Nothing here knows about runs or searches.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from hpctune.errors import ClusterError

_TIMEOUT_S = 30


def require(command: str) -> str:
    """The path of a Slurm command, or a ClusterError: hpctune submits through the real tools."""
    path = shutil.which(command)
    if path is None:
        raise ClusterError(
            f"no `{command}` on PATH: run hpctune on a Slurm login node (or load the Slurm module first)"
        )
    return path


def run(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    require(args[0])
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ClusterError(f"`{' '.join(args)}` did not answer within {_TIMEOUT_S} s: is slurmctld up?") from None
    if check and out.returncode != 0:
        why = (out.stderr or out.stdout).strip().splitlines()
        raise ClusterError(f"`{' '.join(args)}` failed: {why[-1] if why else f'exit {out.returncode}'}")
    return out


@dataclass(frozen=True)
class NodeShape:
    """What one node of a partition has: CPUs, memory (MB; 0 = not configured) and GPUs by type."""

    cpus: int
    mem_mb: int
    gpu_types: tuple[tuple[str | None, int], ...] = ()  # (type or None for untyped, count)

    @property
    def gpus(self) -> int:
        return sum(count for _, count in self.gpu_types)

    def gpus_of(self, gpu_type: str | None) -> int:
        """GPUs a `--gres=gpu[:TYPE]:N` request can take here (no type: any of them)."""
        return self.gpus if gpu_type is None else sum(c for t, c in self.gpu_types if t == gpu_type)


@dataclass(frozen=True)
class Partition:
    name: str
    default: bool
    nodes: int
    cpus_per_node: int  # the smallest node's: what a job can count on anywhere in the partition
    gpus_per_node: int  # the largest node's: more can never be allocated
    max_cpus_per_node: int
    state: str
    time_limit: str  # as sinfo prints it: "infinite", "1-00:00:00"
    default_time: str  # "n/a" when the partition has none
    shapes: tuple[NodeShape, ...] = ()  # one per distinct node kind; () when not known

    def gpu_types(self) -> list[str]:
        return sorted({t for shape in self.shapes for t, _ in shape.gpu_types if t})


def gpu_types(gres: str) -> tuple[tuple[str | None, int], ...]:
    """GPUs by type in a node's GRES string: 'gpu:a100:2(S:0),gpu:v100:2' -> (('a100', 2), ('v100', 2));
    'gpu:4' -> ((None, 4),)."""
    found = []
    for item in re.split(r",(?![^(]*\))", gres):
        fields = item.split("(")[0].split(":")
        if fields[0] == "gpu" and len(fields) >= 2 and fields[-1].isdigit():
            found.append((fields[1] if len(fields) >= 3 else None, int(fields[-1])))
    return tuple(found)


def gpu_count(gres: str) -> int:
    """GPUs in a node's GRES string: 'gpu:4', 'gpu:a100:4(S:0-1)', 'gpu:a100:2,gpu:v100:2' -> 4."""
    return sum(count for _, count in gpu_types(gres))


def _number(text: str) -> int:
    """sinfo's leading number ('64', '256000+', 'n/a' -> 0)."""
    return int(re.sub(r"\D.*", "", text.strip()) or 0)


def partitions() -> dict[str, Partition]:
    """Every partition this user can see, one sinfo call (one line per node and partition)."""
    out = run(["sinfo", "-h", "-a", "-N", "-o", "%P|%N|%c|%G|%a|%l|%L|%m"])
    return parse_partitions(out.stdout)


def parse_partitions(text: str) -> dict[str, Partition]:
    """The partitions in `sinfo -h -a -N -o %P|%N|%c|%G|%a|%l|%L|%m` output."""
    seen: dict[str, list[tuple[str, NodeShape, str, str, str]]] = {}
    defaults = set()
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 8:
            continue
        name, node, cpus, gres, avail, limit, default_time, mem = fields
        if name.endswith("*"):
            name = name[:-1]
            defaults.add(name)
        shape = NodeShape(cpus=_number(cpus), mem_mb=_number(mem), gpu_types=gpu_types(gres))
        seen.setdefault(name, []).append((node, shape, avail, limit, default_time))
    result = {}
    for name, rows in seen.items():
        shapes = [r[1] for r in rows]
        result[name] = Partition(
            name=name, default=name in defaults, nodes=len({r[0] for r in rows}),
            cpus_per_node=min(s.cpus for s in shapes), gpus_per_node=max(s.gpus for s in shapes),
            max_cpus_per_node=max(s.cpus for s in shapes), state=rows[0][2], time_limit=rows[0][3],
            default_time=rows[0][4], shapes=tuple(dict.fromkeys(shapes)),
        )
    return result


def partition(name: str | None) -> Partition:
    """The named partition (None: the cluster's default) or a ClusterError listing the known ones."""
    known = partitions()
    if name is None:
        chosen = next((p for p in known.values() if p.default), None)
        if chosen is None:
            raise ClusterError(f"the cluster has no default partition: pass --partition ({', '.join(known)})")
        return chosen
    if name not in known:
        raise ClusterError(f"unknown partition '{name}': use one of {', '.join(sorted(known)) or '(none visible)'}")
    return known[name]


def squeue_state(job_id: str) -> str | None:
    """The job's state while Slurm still lists it (PENDING, RUNNING, COMPLETING, ...), else None."""
    out = run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], check=False)
    state = out.stdout.strip().splitlines()
    return state[0].strip() if out.returncode == 0 and state else None


def time_left_s(job_id: str) -> int | None:
    """Seconds before the job's time limit (squeue %L); None when unlimited or unknown."""
    from hpctune.slurm.timelimit import parse_slurm_duration

    out = run(["squeue", "-h", "-j", str(job_id), "-o", "%L"], check=False)
    text = out.stdout.strip()
    return parse_slurm_duration(text) if out.returncode == 0 and text else None


def preempted_in_this_run(job_id: str) -> bool:
    """Whether Slurm chose the job for preemption since this run of it started (scontrol's PreemptTime
    after StartTime). Where the cluster preempts with SIGTERM alone (PreemptMode=REQUEUE without
    preempt_send_user_signal), this tells a preemption from any other TERM."""
    details = job_details(job_id)
    preempted, started = details.get("PreemptTime", ""), details.get("StartTime", "")
    if not preempted or preempted in {"None", "Unknown", "(null)"}:
        return False
    return not started or started in {"None", "Unknown"} or preempted >= started  # ISO times sort as text


def job_details(job_id: str) -> dict[str, str]:
    """`scontrol show job -o` as a dict (JobState, Restarts, NodeList, RunTime, ...); {} if unknown."""
    out = run(["scontrol", "show", "job", "-o", str(job_id)], check=False)
    if out.returncode != 0:
        return {}
    details = {}
    for token in out.stdout.split():
        key, sep, value = token.partition("=")
        if sep and key not in details:
            details[key] = value
    return details


def sacct_history(job_ids: list[str]) -> dict[str, list[dict[str, str]]]:
    """Accounting records of whole jobs, one per run of each (requeues included, oldest first):
    State, ExitCode, Start, End, Elapsed, NodeList. {} where sacct is missing or has nothing."""
    if not job_ids or shutil.which("sacct") is None:
        return {}
    fields = "JobID,State,ExitCode,Start,End,Elapsed,NodeList".split(",")
    args = ["sacct", "-n", "-X", "-P", "-D", "-o", ",".join(fields)]
    for job in job_ids:
        args += ["-j", str(job)]
    out = run(args, check=False)
    history: dict[str, list[dict[str, str]]] = {}
    for line in out.stdout.splitlines():
        values = line.split("|")
        if len(values) == len(fields):
            record = dict(zip(fields, values, strict=True))
            history.setdefault(record["JobID"], []).append(record)
    return history


def requeue(job_id: str) -> None:
    run(["scontrol", "requeue", str(job_id)])


def cancel(job_id: str) -> None:
    run(["scancel", str(job_id)])
