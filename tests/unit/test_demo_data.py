"""Unit tests of the synthetic demo dataset generator (no training, a second or less)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from hpctune.yolo import demo
from hpctune.yolo.demo import CLASS_NAMES, MARKER, make_demo_dataset

SMALL = {"n_train": 12, "n_val": 5, "imgsz": 64}


def _files(root: Path) -> dict[str, bytes]:
    """Every generated image and label, by relative path."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix in {".png", ".txt"}
    }


def test_layout_yaml_and_labels_are_valid(tmp_path: Path) -> None:
    data_yaml = make_demo_dataset(tmp_path / "shapes", seed=3, **SMALL)
    root = (tmp_path / "shapes").resolve()
    assert data_yaml == root / "data.yaml"
    data = yaml.safe_load(data_yaml.read_text())
    assert Path(data["path"]) == root and Path(data["path"]).is_absolute()
    assert list(data["names"].values()) == list(CLASS_NAMES)
    for split, count in (("train", SMALL["n_train"]), ("val", SMALL["n_val"])):
        image_dir = Path(data[split])
        assert image_dir.is_absolute() and image_dir == root / "images" / split
        images = sorted(image_dir.glob("*.png"))
        assert len(images) == count
        for image_path in images:
            with Image.open(image_path) as image:
                assert image.size == (SMALL["imgsz"], SMALL["imgsz"]) and image.mode == "RGB"
            label = root / "labels" / split / f"{image_path.stem}.txt"
            rows = [line.split() for line in label.read_text().splitlines()]
            assert 1 <= len(rows) <= demo.MAX_OBJECTS
            for row in rows:
                assert len(row) == 5
                cls, (cx, cy, w, h) = int(row[0]), map(float, row[1:])
                assert 0 <= cls < len(CLASS_NAMES)
                assert 0 < w <= 1 and 0 < h <= 1
                assert cx - w / 2 >= -1e-6 and cx + w / 2 <= 1 + 1e-6
                assert cy - h / 2 >= -1e-6 and cy + h / 2 <= 1 + 1e-6


def test_boxes_match_the_drawn_shapes(tmp_path: Path) -> None:
    """In one-object images, the pixels unlike the background span exactly the labelled box."""
    import numpy as np

    root = tmp_path / "d"
    make_demo_dataset(root, n_train=24, n_val=1, imgsz=64)
    checked = 0
    for label in (root / "labels" / "train").glob("*.txt"):
        rows = label.read_text().splitlines()
        if len(rows) != 1:
            continue
        _, cx, cy, w, h = map(float, rows[0].split())
        x0, y0, x1, y1 = (round(v * 64) for v in (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        pixels = np.asarray(Image.open(root / "images" / "train" / f"{label.stem}.png"), float)
        outside = np.ones((64, 64), bool)
        outside[y0:y1, x0:x1] = False
        background = np.median(pixels[outside], axis=0)
        ys, xs = np.nonzero(np.abs(pixels - background).sum(axis=2) > 100)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
        checked += 1
    assert checked >= 5


def test_all_classes_appear(tmp_path: Path) -> None:
    make_demo_dataset(tmp_path / "d", **SMALL)
    labels = (tmp_path / "d" / "labels" / "train").glob("*.txt")
    classes = {int(line.split()[0]) for p in labels for line in p.read_text().splitlines()}
    assert classes == set(range(len(CLASS_NAMES)))


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    make_demo_dataset(tmp_path / "a", seed=7, **SMALL)
    make_demo_dataset(tmp_path / "b", seed=7, **SMALL)
    make_demo_dataset(tmp_path / "c", seed=8, **SMALL)
    first = _files(tmp_path / "a")
    assert first and first == _files(tmp_path / "b")
    assert first != _files(tmp_path / "c")


def test_reuse_is_instant_and_rewrites_nothing(tmp_path: Path) -> None:
    root = tmp_path / "d"
    make_demo_dataset(root, **SMALL)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    start = time.perf_counter()
    make_demo_dataset(root, **SMALL)
    assert time.perf_counter() - start < 0.05
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_other_parameters_regenerate(tmp_path: Path) -> None:
    root = tmp_path / "d"
    make_demo_dataset(root, **SMALL)
    make_demo_dataset(root, **{**SMALL, "n_train": 4})
    assert len(list((root / "images" / "train").glob("*.png"))) == 4


def test_incomplete_folder_is_regenerated(tmp_path: Path) -> None:
    root = tmp_path / "d"
    make_demo_dataset(root, **SMALL)
    (root / MARKER).unlink()  # as if interrupted before the end
    next(iter((root / "images" / "train").glob("*.png"))).unlink()
    (root / "junk.txt").write_text("left over")
    make_demo_dataset(root, **SMALL)
    assert (root / MARKER).exists() and not (root / "junk.txt").exists()
    assert len(list((root / "images" / "train").glob("*.png"))) == SMALL["n_train"]


def test_interrupted_generation_leaves_nothing_that_looks_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "_write_split", boom)
    with pytest.raises(KeyboardInterrupt):
        make_demo_dataset(tmp_path / "d", **SMALL)
    assert list(tmp_path.iterdir()) == []  # no final folder, no temporary left behind
    monkeypatch.undo()
    make_demo_dataset(tmp_path / "d", **SMALL)
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_concurrent_calls_agree(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: make_demo_dataset(tmp_path / "d", **SMALL), range(4)))
    assert len(set(paths)) == 1 and paths[0].exists()
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
    assert len(list((tmp_path / "d" / "images" / "train").glob("*.png"))) == SMALL["n_train"]


def test_rejects_bad_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_demo_dataset(tmp_path / "d", n_train=0)


def test_train_args_and_space_make_a_valid_spec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YOLO_OFFLINE", "1")  # in case this is the first import of ultralytics
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path))
    from ultralytics.cfg import DEFAULT_CFG_DICT

    from hpctune.yolo.arguments import RESERVED_TRAIN_ARGS
    from hpctune.yolo.space import validate_space

    arguments = demo.demo_spec_arguments(tmp_path / "data.yaml")
    assert arguments["data"] == str(tmp_path / "data.yaml")
    train_args, space = arguments["train_args"], arguments["space"]
    assert set(train_args) <= set(DEFAULT_CFG_DICT) and set(space) <= set(DEFAULT_CFG_DICT)
    assert not set(train_args) & (RESERVED_TRAIN_ARGS | set(space))
    assert train_args["optimizer"] != "auto"  # "auto" ignores lr0 and momentum
    assert train_args["nbs"] == train_args["batch"]  # else too few optimizer steps to learn
    assert validate_space(space)
    assert train_args["imgsz"] == demo.DEMO_DATASET["imgsz"]
