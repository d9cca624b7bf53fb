"""What a job may ask of a partition: its GPUs, a share of CPUs and memory, its time.

Pure logic over the partition sinfo reported (queries.Partition); each function returns the
value to ask for, or raises a ClusterError that names the limit and the fix.

- GPUs: a partition whose nodes have GPUs needs --gpus-per-node (0 explicitly for a CPU job):
  a job without GPUs there would train on CPUs without a word.
- CPUs and memory: G of a node's N GPUs get floor(CPUs * G / N) CPUs and floor(memory * G / N) MB,
  the smallest such share over the nodes that can hold G GPUs, so the request fits on any of them
  and the other GPUs of the node keep CPUs and memory for other jobs.
- Time: the partition's DefaultTime, else DEFAULT_TIME_MIN, never more than its MaxTime.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hpctune.errors import ClusterError
from hpctune.slurm.queries import Partition
from hpctune.slurm.timelimit import format_time, parse_slurm_duration

DEFAULT_TIME_MIN = 60  # no --time and no DefaultTime: one hour; a longer search continues in requeued runs


@dataclass(frozen=True)
class Share:
    cpus: int
    mem_mb: int | None  # None: the nodes' memory is not configured in Slurm (ask for none)


def requested_gpus(gpus: int | None, gpu_type: str | None, part: Partition) -> int:
    """GPUs per node to ask for: the user's, checked against the partition's nodes."""
    where = f"partition '{part.name}'"
    if gpus is None:
        if part.gpus_per_node:
            raise ClusterError(f"{where} has {part.gpus_per_node} GPU(s) per node and no --gpus-per-node was given: "
                               f"pass --gpus-per-node N (1-{part.gpus_per_node}), or --gpus-per-node 0 to train "
                               "on CPUs only")
        gpus = 0
    if gpu_type is not None:
        _check_gpu_type(gpu_type, part)
    most = max((shape.gpus_of(gpu_type) for shape in part.shapes), default=part.gpus_per_node)
    if gpus > most:
        kind = f"{gpu_type} GPUs" if gpu_type else "GPUs"
        raise ClusterError(f"--gpus-per-node {gpus} is more than {where} has per node ({most} {kind}): "
                           f"use at most {most} or another --partition")
    return gpus


def _check_gpu_type(gpu_type: str, part: Partition) -> None:
    known = part.gpu_types()
    if gpu_type in known:
        return
    where = f"partition '{part.name}'"
    if known:
        raise ClusterError(f"--gpu-type {gpu_type}: {where} has no GPUs of that type: use one of "
                           f"{', '.join(known)} (sinfo -o %G lists them)")
    raise ClusterError(f"--gpu-type {gpu_type}: {where} does not name its GPU types: leave --gpu-type out")


def gpu_share(part: Partition, gpus: int, gpu_type: str | None = None) -> Share | None:
    """CPUs and memory per node in proportion to `gpus` of a node's GPUs; None when the node sizes
    are unknown or no node of the partition has GPUs."""
    fits = [s for s in part.shapes if s.gpus and s.gpus_of(gpu_type) >= gpus]
    if gpus <= 0 or not fits:
        return None
    cpus = min(max(1, s.cpus * gpus // s.gpus) for s in fits)
    known_mem = all(s.mem_mb > 1 for s in fits)  # Slurm's RealMemory default is 1 MB: not configured
    mem = min(s.mem_mb * gpus // s.gpus for s in fits) if known_mem else None
    return Share(cpus=cpus, mem_mb=mem)


def slurm_minutes(text: str) -> int | None:
    """Minutes of a limit as sinfo prints it ('1-00:00:00', '30:00'); None for infinite, n/a, ..."""
    seconds = parse_slurm_duration(text)
    return None if seconds is None else max(1, math.ceil(seconds / 60))


def job_time(time_min: int | None, part: Partition) -> tuple[int, str | None]:
    """Minutes to ask for and, when hpctune chose them, a notice that says why."""
    most = slurm_minutes(part.time_limit)
    where = f"partition '{part.name}'"
    if time_min is not None:
        if most is not None and time_min > most:
            raise ClusterError(f"--time {format_time(time_min)} is more than {where} allows (MaxTime "
                               f"{format_time(most)}): pass --time {format_time(most)} or less, or another --partition")
        return time_min, None
    default = slurm_minutes(part.default_time)
    if default is not None:
        chosen, why = default, f"{where}'s DefaultTime"
    else:
        chosen, why = DEFAULT_TIME_MIN, f"hpctune's default ({where} has no DefaultTime)"
    if most is not None and chosen > most:
        chosen, why = most, f"{where}'s MaxTime"
    return chosen, f"--time not given: asking for {format_time(chosen)}, {why}; pass --time to change it"
