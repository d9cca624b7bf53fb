"""A search as a SLURM job: submission (submitit), the in-job entry and requeue policy, the local route, status."""
