"""Ray's node-local temp dirs: private (0700), randomly named under $TMPDIR, in a folder another user cannot
tamper with; the sweep removes only our own dirs of ended jobs."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

import pytest

from hpctune.errors import ClusterError
from hpctune.raycluster.cluster import _temp_root
from hpctune.raycluster.node import private_temp_dir, sweep_stale_temp_dirs, temp_dir_key

PREFIX = "hpct-91.0.1-"
OTHER_UID = 54321


@pytest.fixture
def tmpdir_env(monkeypatch):
    """Point $TMPDIR somewhere, as a job's environment does (tempfile caches what it found)."""
    def point(path: Path) -> None:
        monkeypatch.setenv("TMPDIR", str(path))
        monkeypatch.setattr(tempfile, "tempdir", None)
    yield point
    tempfile.tempdir = None


def test_temp_dirs_are_private_and_unpredictable(tmp_path):
    first, second = private_temp_dir(tmp_path, PREFIX), private_temp_dir(tmp_path, PREFIX)
    assert first != second and first.parent == second.parent == tmp_path
    assert first.name.startswith(PREFIX) and stat.S_IMODE(first.stat().st_mode) == 0o700
    assert temp_dir_key(first) == "91.0"


def test_a_folder_another_user_made_at_the_old_name_is_no_obstacle(tmp_path):
    taken = tmp_path / "hpct-91.0.1"  # the predictable name a job used to take
    taken.mkdir()
    if os.getuid() == 0:
        os.chown(taken, OTHER_UID, OTHER_UID)
    assert private_temp_dir(tmp_path, PREFIX) != taken


@pytest.mark.skipif(os.getuid() != 0, reason="giving a folder to another user needs root")
def test_a_temp_folder_owned_by_another_user_is_refused(tmp_path):
    root = tmp_path / "theirs"
    root.mkdir()
    os.chown(root, OTHER_UID, OTHER_UID)
    with pytest.raises(ClusterError, match=f"owned by uid {OTHER_UID}.*set TMPDIR") as info:
        private_temp_dir(root, PREFIX)
    assert "\n" not in str(info.value)
    assert list(root.iterdir()) == []


def test_a_temp_folder_anyone_may_write_without_the_sticky_bit_is_refused(tmp_path):
    root = tmp_path / "open"
    root.mkdir()
    root.chmod(0o777)
    with pytest.raises(ClusterError, match="sticky"):
        private_temp_dir(root, PREFIX)
    root.chmod(0o1777)  # as /tmp is
    assert private_temp_dir(root, PREFIX).parent == root


@pytest.fixture
def short_dir():
    """A folder with a path short enough for Ray's sockets (pytest's tmp_path is too long)."""
    path = Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_temp_root_is_tmpdir(short_dir, tmpdir_env):
    tmpdir_env(short_dir)
    assert _temp_root(None, PREFIX) == short_dir
    assert _temp_root("/var/tmp", PREFIX) == Path("/var/tmp")


def test_a_tmpdir_too_long_for_unix_sockets_falls_back_to_tmp(tmp_path, tmpdir_env):
    long = tmp_path / ("d" * 60)
    long.mkdir()
    tmpdir_env(long)
    assert _temp_root(None, PREFIX) == Path("/tmp")
    with pytest.raises(ClusterError, match="too long for unix sockets"):
        _temp_root(str(long), PREFIX)


def _age(*paths: Path) -> None:
    old = time.time() - 600
    for path in paths:
        os.utime(path, (old, old))


def test_the_sweep_removes_our_old_dirs_of_ended_jobs(tmp_path):
    ours = private_temp_dir(tmp_path, PREFIX)
    legacy = tmp_path / "hpct-92.0.1"  # a name from before the random suffix
    legacy.mkdir()
    young = private_temp_dir(tmp_path, "hpct-93.0.1-")
    _age(ours, legacy)
    assert sorted(sweep_stale_temp_dirs(tmp_path)) == sorted([ours, legacy])
    assert young.exists()


@pytest.mark.skipif(os.getuid() != 0, reason="giving a folder to another user needs root")
def test_the_sweep_leaves_other_users_dirs_alone(tmp_path):
    theirs = private_temp_dir(tmp_path, PREFIX)
    os.chown(theirs, OTHER_UID, OTHER_UID)
    _age(theirs)
    assert sweep_stale_temp_dirs(tmp_path) == [] and theirs.exists()
