"""Slurm time limits: `--time` as sbatch reads it, to whole minutes and back.

sbatch accepts "M", "M:S", "H:M:S", "D-H", "D-H:M" and "D-H:M:S"; hpctune keeps minutes (what
submitit wants and what its timeout bookkeeping counts in), rounding seconds up.
"""

from __future__ import annotations

import math
import re

from hpctune.errors import SpecError

_FORMATS = "D-HH:MM:SS, HH:MM:SS, MM:SS or minutes"


def parse_time(text: str) -> int:
    """Minutes of a Slurm time limit; SpecError naming the accepted forms for anything else."""
    raw = str(text).strip()
    days, hours, minutes, seconds, has_hours = 0, 0, 0, 0, True
    try:
        if "-" in raw:
            day_part, _, rest = raw.partition("-")
            days = _number(day_part)
            parts = [_number(p) for p in rest.split(":")]
            if not 1 <= len(parts) <= 3:
                raise ValueError
            hours, minutes, seconds = (parts + [0, 0])[:3]
        else:
            parts = [_number(p) for p in raw.split(":")]
            has_hours = len(parts) == 3
            if len(parts) == 1:
                (minutes,) = parts
            elif len(parts) == 2:
                minutes, seconds = parts
            elif len(parts) == 3:
                hours, minutes, seconds = parts
            else:
                raise ValueError
    except ValueError:
        raise SpecError(f"--time '{text}' is not a Slurm time: write {_FORMATS}, e.g. 0-12:00:00") from None
    if seconds >= 60 or (has_hours and minutes >= 60) or ("-" in raw and hours >= 24):
        raise SpecError(f"--time '{text}' has a field out of range (hours 0-23 after a day, minutes and "
                        "seconds 0-59): write e.g. 0-12:00:00")
    total = math.ceil(days * 1440 + hours * 60 + minutes + seconds / 60)
    if total <= 0:
        raise SpecError(f"--time '{text}' is zero: give the job time to run, e.g. 0-12:00:00")
    return total


def format_time(minutes: int) -> str:
    """Minutes as D-HH:MM:SS."""
    days, rest = divmod(int(minutes), 1440)
    return f"{days}-{rest // 60:02d}:{rest % 60:02d}:00"


def parse_slurm_duration(text: str) -> int | None:
    """Seconds of a duration Slurm prints (squeue %L, scontrol RunTime): None for UNLIMITED, N/A, ..."""
    m = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", text.strip())
    if not m:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def _number(text: str) -> int:
    if not re.fullmatch(r"\d+", text.strip()):
        raise ValueError(text)
    return int(text)
