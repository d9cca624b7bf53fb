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


def gpu_count(gres: str) -> int:
    """GPUs in a node's GRES string: 'gpu:4', 'gpu:a100:4(S:0-1)', 'gpu:a100:2,gpu:v100:2' -> 4."""
    total = 0
    for item in re.split(r",(?![^(]*\))", gres):
        fields = item.split("(")[0].split(":")
        if fields[0] == "gpu" and len(fields) >= 2 and fields[-1].isdigit():
            total += int(fields[-1])
    return total


def partitions() -> dict[str, Partition]:
    """Every partition this user can see, one sinfo call (one line per node and partition)."""
    out = run(["sinfo", "-h", "-a", "-N", "-o", "%P|%N|%c|%G|%a|%l|%L"])
    seen: dict[str, list[tuple[str, int, int, str, str, str]]] = {}
    defaults = set()
    for line in out.stdout.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 7:
            continue
        name, node, cpus, gres, avail, limit, default_time = fields
        if name.endswith("*"):
            name = name[:-1]
            defaults.add(name)
        cpus_n = int(re.sub(r"\D.*", "", cpus) or 0)
        seen.setdefault(name, []).append((node, cpus_n, gpu_count(gres), avail, limit, default_time))
    result = {}
    for name, rows in seen.items():
        nodes = {r[0] for r in rows}
        result[name] = Partition(
            name=name, default=name in defaults, nodes=len(nodes),
            cpus_per_node=min(r[1] for r in rows), gpus_per_node=max(r[2] for r in rows),
            max_cpus_per_node=max(r[1] for r in rows), state=rows[0][3], time_limit=rows[0][4],
            default_time=rows[0][5],
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
