"""A Ray cluster inside a SLURM allocation: ports, token, node start, readiness, teardown, self-test."""
