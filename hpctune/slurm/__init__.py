"""SLURM facts: the allocation this process runs in (``allocation.Allocation``)."""

from hpctune.slurm.allocation import Allocation, expand_counts, expand_hostlist

__all__ = ["Allocation", "expand_counts", "expand_hostlist"]
