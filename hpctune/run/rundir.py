"""The run directory: the single source of truth of a search, on shared storage.

    RUN_DIR/
      manifest.json            the resolved spec (with the baseline configuration), package versions, seed
      suggestions.jsonl        every configuration the searcher suggested, written when suggested
      data.yaml                the dataset description with absolute paths, as trials read it
      hpctune.log              the driver's log
      tune/                    Ray Tune's experiment state and per-trial folders
      trials/<trial_id>/       one YOLO training: weights/, epochs.jsonl, resume/{last,previous}.pt, output.log
      asha_rungs.json          ASHA's rung records, as of the last experiment snapshot
      final/                   the final training (--final-epochs): tune/, trials/<trial_id>/, best.pt
      results.csv              one row per trial
      best_hyperparameters.yaml, best.pt, summary.json
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from hpctune.errors import RunDirError
from hpctune.run.lock import LOCK, hold  # noqa: F401  (LOCK: the lock file's name)

MANIFEST = "manifest.json"
FORMAT = 2  # 2: configurations suggested as the search goes (suggestions.jsonl); 1: sampled into the manifest


def check_format(rundir: RunDir, manifest: dict[str, Any]) -> None:
    """A run written by another layout of hpctune cannot be resumed by this one: say so in one line."""
    found = manifest.get("format", 1)
    if found != FORMAT:
        raise RunDirError(
            f"run {rundir.path} was written by hpctune 0.1 (run format {found}, this hpctune reads {FORMAT}): "
            "resume it with `pip install hpctune==0.1.0`, or start a new search; its results stay readable"
        )


def current_umask() -> int:
    """The process's umask, read from /proc where Linux shows it: setting it to read it races with threads."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode open() would give a new file: the run directory honours the user's umask."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode mkdir() would give a new folder."""
    return 0o777 & ~current_umask()


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` survive a crash (the entry lives in the folder, not the file).
    File systems that cannot fsync a folder say EINVAL: nothing more can be done there."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[BinaryIO], None], mode: int | None) -> None:
    """Write through a uniquely named temporary file beside `path`, fsynced, then renamed over it:
    readers and a crash see the old or the complete new file, and no temporary file is left behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode() if mode is None else mode)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str, mode: int | None = None) -> None:
    """Write a file so that readers see the old or the new content, never a torn one.
    `mode`: None for the umask's default; private files pass 0o600."""
    _atomic_write(path, lambda f: f.write(text.encode()), mode)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda f: f.write(data), None)


def atomic_copy(source: Path, target: Path) -> None:
    """Copy a file (a checkpoint) so that `target` holds the old or the complete new copy, even after a crash."""
    def write(f: BinaryIO) -> None:
        with open(source, "rb") as src:
            shutil.copyfileobj(src, f, 1 << 20)

    _atomic_write(target, write, None)


def append_jsonl(path: Path, record: Any) -> None:
    """Append one JSON line, durably. A line torn by an earlier crash (no final newline) is ended
    first, so that it costs only itself and never the record after it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        torn = f.tell() > 0 and (f.seek(-1, os.SEEK_END), f.read(1))[1] != b"\n"
        f.write((b"\n" if torn else b"") + json.dumps(record, default=float).encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[Any]:
    """The records of a JSON-lines file; lines torn by a crash are skipped, not the lines after them."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


class RunDir:
    """Paths and files of one run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser().resolve()

    manifest = property(lambda self: self.path / MANIFEST)
    data_yaml = property(lambda self: self.path / "data.yaml")
    log_file = property(lambda self: self.path / "hpctune.log")
    experiment = property(lambda self: self.path / "tune")
    trials = property(lambda self: self.path / "trials")
    asha_rungs = property(lambda self: self.path / "asha_rungs.json")
    suggestions = property(lambda self: self.path / "suggestions.jsonl")
    final_experiment = property(lambda self: self.path / "final" / "tune")  # Ray's state of the final training
    final_trials = property(lambda self: self.path / "final" / "trials")
    results_csv = property(lambda self: self.path / "results.csv")
    best_yaml = property(lambda self: self.path / "best_hyperparameters.yaml")
    best_weights = property(lambda self: self.path / "best.pt")
    summary = property(lambda self: self.path / "summary.json")
    env_dir = property(lambda self: self.path / "env")

    def trial_dir(self, trial_id: str) -> Path:
        return self.trials / trial_id

    def has_experiment_state(self, experiment: Path | None = None) -> bool:
        return any((experiment or self.experiment).glob("experiment_state-*.json"))

    def read_manifest(self) -> dict[str, Any]:
        """The manifest, or an error that says why this folder cannot be resumed."""
        if not self.path.is_dir():
            raise RunDirError(f"run directory {self.path} does not exist: give the folder `hpctune tune` printed")
        if not self.manifest.is_file():
            raise RunDirError(
                f"{self.path} is not an hpctune run (no {MANIFEST}): give the folder `hpctune tune` printed"
            )
        try:
            data = json.loads(self.manifest.read_text())
        except (OSError, ValueError) as exc:
            raise RunDirError(
                f"manifest {self.manifest} is corrupt ({exc.__class__.__name__}): restore it from a backup "
                "or start a new run"
            ) from exc
        if not isinstance(data, dict) or "spec" not in data:
            raise RunDirError(
                f"manifest {self.manifest} is corrupt (missing spec): restore it or start a new run"
            )
        return data

    def write_manifest(self, data: dict[str, Any]) -> None:
        atomic_write_json(self.manifest, data)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run: a second driver of the same run gets a clear error instead of a corrupted run."""
        with hold(self.path):
            yield
