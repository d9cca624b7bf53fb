"""Files of the run directory: written through unique, fsynced temporary files that never stay behind,
with the permissions the user's umask gives (private files excepted)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hpctune.api import create_run
from hpctune.raycluster.node import write_private
from hpctune.run import rundir
from hpctune.run.rundir import atomic_copy, atomic_write_bytes, atomic_write_text
from hpctune.run.spec import RunSpec


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_copy_ignores_a_file_at_the_old_fixed_temp_name(tmp_path):
    source = tmp_path / "weights" / "best.pt"
    source.parent.mkdir()
    source.write_bytes(b"weights" * 1000)
    (tmp_path / ".best.pt.tmp").mkdir()  # what a fixed temp name would collide with
    atomic_copy(source, tmp_path / "best.pt")
    assert (tmp_path / "best.pt").read_bytes() == source.read_bytes()


def test_a_failed_copy_leaves_no_temporary_file(tmp_path):
    source = tmp_path / "last.pt"
    source.write_bytes(b"x" * 100)
    target = tmp_path / "resume" / "last.pt"
    (target / "in-the-way").mkdir(parents=True)  # a folder where the file should go: the rename fails
    with pytest.raises(OSError):
        atomic_copy(source, target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.pt"]


def test_written_files_and_their_folders_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(rundir.os, "fsync", spy)
    atomic_write_text(tmp_path / "manifest.json", "{}\n")
    assert synced == ["file", "dir"]
    synced.clear()
    source = tmp_path / "best.pt"
    source.write_bytes(b"w")
    atomic_copy(source, tmp_path / "copy.pt")
    assert synced == ["file", "dir"]


def test_files_honour_the_umask(tmp_path, umask_027):
    atomic_write_text(tmp_path / "a.txt", "a")
    atomic_write_bytes(tmp_path / "plot.png", b"png")
    source = tmp_path / "src.pt"
    source.write_bytes(b"w")
    atomic_copy(source, tmp_path / "best.pt")
    assert [_mode(tmp_path / n) for n in ("a.txt", "plot.png", "best.pt")] == [0o640] * 3


def test_private_files_stay_private(tmp_path, umask_027):
    write_private(tmp_path / "token", "secret")
    assert _mode(tmp_path / "token") == 0o600


def test_a_new_run_directory_honours_the_umask(tmp_path, umask_027):
    spec = RunSpec(model="yolov8n.yaml", data="d.yaml", task="detect", metric="metrics/mAP50-95(B)", epochs=2,
                   grace_period=1, reduction_factor=3, max_samples=2, gpu_per_trial=0, cpus_per_trial=1,
                   seed=0, name="run", storage=str(tmp_path), space={})
    run = create_run(spec)
    assert _mode(run.path) == 0o750
    assert _mode(run.manifest) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging folder left
