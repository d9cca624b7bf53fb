"""Errors a user can cause. The CLI prints them on one line and exits with code 2."""


class HpctuneError(Exception):
    """A problem with the user's input or environment, with the fix in its message."""

    exit_code = 2


class SpecError(HpctuneError):
    """A bad argument: search space, training argument, resources, ASHA settings."""


class DataError(HpctuneError):
    """A missing or malformed dataset or model file."""


class RunDirError(HpctuneError):
    """A run directory that cannot be created, read, or driven."""


class ClusterError(HpctuneError):
    """A SLURM or Ray cluster problem: no sbatch, unknown partition, nodes that did not join."""
