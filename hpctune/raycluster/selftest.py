"""``python -m hpctune.raycluster.selftest --shared-dir DIR [--selftest] [--hold S]``: bring a Ray
cluster up inside a SLURM step (one task per node), check it, and tear it down.

For tests and benchmarks. On rank 0 it prints one line ``HPCTUNE_RAY {json}`` with the join
time, per-node resources as Ray sees them and, with ``--selftest``, one task's view from
each node (host, IP, GPU ids). ``--hold S`` keeps the cluster up S seconds, or until a file
named ``release`` appears in the run folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time


def _task_view() -> dict:
    import ray

    return {
        "hostname": socket.gethostname(),
        "ip": ray.util.get_node_ip_address(),
        "pid": os.getpid(),
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "node_gpus": _node_gpus(),
    }


def _node_gpus() -> str | None:
    """CUDA_VISIBLE_DEVICES of the raylet that started this worker: the node's allocation."""
    try:
        env = open(f"/proc/{os.getppid()}/environ", "rb").read().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"CUDA_VISIBLE_DEVICES="):
            return item.split(b"=", 1)[1].decode()
    return None


def selftest() -> dict:
    """One task pinned to each alive node; the cluster's per-node resources."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ray.init(logging_level=logging.WARNING, log_to_driver=False)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    view = ray.remote(_task_view)
    refs = [
        view.options(
            num_cpus=1,
            num_gpus=1 if n["Resources"].get("GPU", 0) >= 1 else 0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
        ).remote()
        for n in nodes
    ]
    tasks = ray.get(refs, timeout=60)
    return {
        "nodes": [
            {
                "ip": n["NodeManagerAddress"],
                "CPU": n["Resources"].get("CPU", 0),
                "GPU": n["Resources"].get("GPU", 0),
                "memory": n["Resources"].get("memory", 0),
                "object_store_memory": n["Resources"].get("object_store_memory", 0),
            }
            for n in nodes
        ],
        "tasks": tasks,
    }


def main(argv: list[str] | None = None) -> int:
    from hpctune.errors import HpctuneError
    from hpctune.raycluster.cluster import ray_cluster
    from hpctune.slurm.allocation import Allocation

    p = argparse.ArgumentParser(prog="python -m hpctune.raycluster.selftest", description=__doc__)
    p.add_argument("--shared-dir", required=True, help="folder on storage all nodes see")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds for all nodes to join")
    p.add_argument("--selftest", action="store_true", help="run one Ray task on each node")
    p.add_argument("--hold", type=float, default=0.0, help="keep the cluster up this long")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    try:
        with ray_cluster(Allocation.from_env(), args.shared_dir, timeout_s=args.timeout) as c:
            if not c.is_head:
                return 0
            out = {"address": c.address, "joined_s": c.joined_s, "joined_at": time.time(),
                   "num_nodes": c.num_nodes, "run_dir": str(c.run_dir)}
            print("HPCTUNE_RAY_UP " + json.dumps(out), flush=True)
            if args.selftest:
                out.update(selftest())
            end = time.monotonic() + args.hold
            while time.monotonic() < end and not (c.run_dir / "release").exists():
                time.sleep(0.2)
            print("HPCTUNE_RAY " + json.dumps(out), flush=True)
    except HpctuneError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
