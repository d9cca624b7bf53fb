"""The SLURM allocation this process runs in, read from the SLURM_* environment.

Pure logic: no subprocess, no network, no file access. ``Allocation.from_env()`` returns
``None`` outside SLURM and raises ``ClusterError`` when the variables SLURM set are
inconsistent (a message naming the variable and what to change).

Inside a job step (``srun``) the step's view wins over the job's: the step's node list and
node count, ``SLURM_NODEID`` relative to the step. In the batch script itself the job's
node list is used and this process is node 0.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from hpctune.errors import ClusterError

__all__ = ["Allocation", "expand_counts", "expand_hostlist"]


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets: 'a[1,2],b' -> ['a[1,2]', 'b']."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in host list {text!r}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise ValueError(f"unbalanced '[' in host list {text!r}")
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _expand_range(spec: str, whole: str) -> list[str]:
    """'1-3,07,10-11' -> ['1', '2', '3', '07', '10', '11'] (zero padding kept)."""
    out: list[str] = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?(?::(\d+))?", item)
        if not m:
            raise ValueError(f"bad range {item!r} in host list {whole!r}")
        lo_s, hi_s, step_s = m.groups()
        if hi_s is None:
            out.append(lo_s)
            continue
        lo, hi, step = int(lo_s), int(hi_s), int(step_s or 1)
        if hi < lo or step < 1:
            raise ValueError(f"bad range {item!r} in host list {whole!r}")
        width = len(lo_s)
        out.extend(str(n).zfill(width) for n in range(lo, hi + 1, step))
    return out


def _expand_one(pattern: str, whole: str) -> list[str]:
    """'rack[1-2]-n[01-02]' -> rack1-n01, rack1-n02, rack2-n01, rack2-n02."""
    open_at = pattern.find("[")
    if open_at < 0:
        if "]" in pattern:
            raise ValueError(f"unbalanced ']' in host list {whole!r}")
        return [pattern]
    close_at = pattern.find("]", open_at)
    if close_at < 0:
        raise ValueError(f"unbalanced '[' in host list {whole!r}")
    prefix = pattern[:open_at]
    values = _expand_range(pattern[open_at + 1 : close_at], whole)
    rest = _expand_one(pattern[close_at + 1 :], whole)
    return [prefix + v + r for v in values for r in rest]


def expand_hostlist(hostlist: str) -> list[str]:
    """Expand a SLURM host list the way ``scontrol show hostnames`` does, in order.

    >>> expand_hostlist("n[1-3,07],gpu-a[01-02]")
    ['n1', 'n2', 'n3', 'n07', 'gpu-a01', 'gpu-a02']
    """
    hosts: list[str] = []
    for part in _split_top_level(hostlist.strip()):
        hosts.extend(_expand_one(part, hostlist))
    return hosts


def expand_counts(counts: str) -> list[int]:
    """Expand SLURM's compressed per-node counts: '4(x3),2' -> [4, 4, 4, 2]."""
    out: list[int] = []
    for item in counts.split(","):
        item = item.strip()
        if not item:
            continue
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", item)
        if not m:
            raise ValueError(f"bad per-node count {item!r} in {counts!r}")
        out.extend([int(m.group(1))] * int(m.group(2) or 1))
    return out


def _gpu_count(env: Mapping[str, str]) -> int:
    """GPUs usable on this node.

    CUDA_VISIBLE_DEVICES (set by SLURM's gres plugin, and what CUDA itself obeys) first;
    'NoDevFiles' (GPUs allocated, gres.conf without device files) and an unset variable
    fall back to SLURM's own lists and counts.
    """
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None and cvd.strip() != "NoDevFiles":
        return len([d for d in cvd.split(",") if d.strip()])
    for name in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        ids = env.get(name, "").strip()
        if ids and ids != "NoDevFiles":
            return len([d for d in ids.split(",") if d.strip()])
    on_node = env.get("SLURM_GPUS_ON_NODE", "").strip()
    if on_node.isdigit():
        return int(on_node)
    return 0


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw.strip())
    except ValueError:
        raise ClusterError(
            f"{name}={raw!r} is not an integer: run inside a SLURM job or unset {name}"
        ) from None


@dataclass(frozen=True)
class Allocation:
    """Where this process runs: the nodes of the job (step), this node's rank and resources."""

    job_id: str
    nodes: tuple[str, ...]
    node_rank: int
    cpus: int
    gpus: int = 0
    step_id: str | None = None
    restart_count: int = 0
    submit_dir: str | None = None
    local_rank: int = 0
    tasks_on_node: int = 1
    mem_mb: int | None = None  # memory of this job on this node, None if SLURM did not say

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def hostname(self) -> str:
        """This node's name as SLURM knows it."""
        return self.nodes[self.node_rank]

    @property
    def head_hostname(self) -> str:
        return self.nodes[0]

    @property
    def is_head(self) -> bool:
        return self.node_rank == 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Allocation | None:
        """Read the allocation from ``env`` (default ``os.environ``); ``None`` outside SLURM."""
        env = os.environ if env is None else env
        job_id = (env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID") or "").strip()
        if not job_id:
            return None

        nodelist_var = next(
            (
                v
                for v in ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")
                if env.get(v, "").strip()
            ),
            None,
        )
        if nodelist_var is None:
            raise ClusterError(
                f"SLURM job {job_id} has no SLURM_JOB_NODELIST: run the command inside the "
                "job (sbatch/srun/salloc), not with a copied SLURM_JOB_ID"
            )
        try:
            nodes = tuple(expand_hostlist(env[nodelist_var]))
        except ValueError as e:
            raise ClusterError(f"{nodelist_var}: {e}; expected a SLURM host list like n[1-3]") from None
        if not nodes:
            raise ClusterError(f"{nodelist_var} is empty: run the command inside a SLURM job")

        node_rank = _int(env, "SLURM_NODEID", None)
        if node_rank is None:
            # The batch script itself runs on the first node of the job.
            name = env.get("SLURMD_NODENAME", "")
            node_rank = nodes.index(name) if name in nodes else 0
        if not 0 <= node_rank < len(nodes):
            raise ClusterError(
                f"SLURM_NODEID={node_rank} is outside {nodelist_var} ({len(nodes)} nodes): "
                "launch one task per node with srun"
            )

        cpus = _int(env, "SLURM_CPUS_ON_NODE", None)
        if cpus is None:
            per_node_var = next(
                (v for v in ("SLURM_JOB_CPUS_PER_NODE", "SLURM_CPUS_PER_NODE") if env.get(v)),
                None,
            )
            if per_node_var:
                try:
                    counts = expand_counts(env[per_node_var])
                except ValueError as e:
                    raise ClusterError(f"{per_node_var}: {e}") from None
                cpus = counts[node_rank] if node_rank < len(counts) else counts[-1]
        if cpus is None:
            cpus = os.cpu_count() or 1

        tasks_on_node = 1
        tasks_var = "SLURM_STEP_TASKS_PER_NODE" if "SLURM_STEP_ID" in env else "SLURM_TASKS_PER_NODE"
        if env.get(tasks_var):
            try:
                counts = expand_counts(env[tasks_var])
                tasks_on_node = counts[node_rank] if node_rank < len(counts) else counts[-1]
            except ValueError:
                tasks_on_node = 1

        mem_mb = _int(env, "SLURM_MEM_PER_NODE", None)
        if not mem_mb:  # unset, or 0 = "all of the node's memory"
            per_cpu = _int(env, "SLURM_MEM_PER_CPU", None)
            mem_mb = per_cpu * cpus if per_cpu else None

        return cls(
            job_id=job_id,
            nodes=nodes,
            node_rank=node_rank,
            cpus=cpus,
            gpus=_gpu_count(env),
            step_id=(env.get("SLURM_STEP_ID") or None),
            restart_count=_int(env, "SLURM_RESTART_COUNT", 0) or 0,
            submit_dir=(env.get("SLURM_SUBMIT_DIR") or None),
            local_rank=_int(env, "SLURM_LOCALID", 0) or 0,
            tasks_on_node=tasks_on_node,
            mem_mb=mem_mb,
        )
