"""CLI commands for SLURM: submit, sbatch, status, cancel."""

from __future__ import annotations
