"""`hpctune tune` here: on a given Ray cluster, on every node of the allocation this process runs
in (a batch script or an salloc shell: one srun task per node), else on this machine."""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys
from pathlib import Path

from hpctune.errors import ClusterError
from hpctune.run.results import load_result
from hpctune.run.rundir import RunDir
from hpctune.run.spec import RunSpec
from hpctune.slurm import queries
from hpctune.slurm.allocation import Allocation
from hpctune.slurm.settings import check_storage

log = logging.getLogger(__name__)


def check_local_run(spec: RunSpec, address: str | None) -> None:
    """`hpctune tune` inside a multi-node allocation uses every node: storage must be shared."""
    alloc = Allocation.from_env()
    if address is None and alloc is not None and alloc.step_id is None and alloc.num_nodes > 1:
        check_storage(spec.storage, f"run directory {spec.run_dir}")


def run_search(run_dir: str | Path, address: str | None = None):
    """Run a search here: on a given Ray cluster; on every node of the allocation this process
    runs in (a batch script or an salloc shell: one `srun` task per node); else on this machine."""
    from hpctune.engine import driver as search

    alloc = Allocation.from_env()
    if address is not None or alloc is None:
        return search.run(run_dir, address=address)
    if alloc.step_id is not None:
        if alloc.tasks_on_node > 1 or len(alloc.nodes) > 1:
            raise ClusterError(
                "hpctune runs once per job, not in every task of a step: call it in the batch script or the "
                "salloc shell (it starts one task per node itself), or give --address of a Ray cluster"
            )
        return search.run(run_dir, address=address)  # a one-task step (e.g. srun --pty): this node only
    cmd = ["srun", f"--nodes={alloc.num_nodes}", f"--ntasks={alloc.num_nodes}", "--ntasks-per-node=1",
           f"--cpus-per-task={alloc.cpus}", "--kill-on-bad-exit=0", "--unbuffered",
           sys.executable, "-u", "-m", "hpctune.jobs.entry", "--no-requeue", str(RunDir(run_dir).path)]
    queries.require("srun")
    log.info("running on the %d node(s) of job %s: %s", alloc.num_nodes, alloc.job_id, shlex.join(cmd))
    code = subprocess.run(cmd).returncode
    if code != 0:
        log_file = RunDir(run_dir).log_file
        log.warning("srun ended with exit code %d: %s", code,
                    f"see {log_file}" if log_file.exists() else "the search never started (no log written)")
    return load_result(run_dir)


