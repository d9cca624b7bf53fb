"""CLI commands that read run directories: report, list, sync."""

from __future__ import annotations
