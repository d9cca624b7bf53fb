"""Synthetic shapes detection dataset for `hpctune demo` and the test suite.

`make_demo_dataset` draws filled circles, rectangles and triangles (3 classes, 1-4 per image) of
random colours on a noisy background and writes them as a YOLO detection dataset (PNG images,
label txt files, `data.yaml` with absolute paths). It needs no download, is deterministic for a
seed, and is built in a temporary sibling folder that is renamed into place only when complete,
so an interrupted generation is never mistaken for a finished one; a finished dataset with the
same parameters is reused at once.

`DEMO_TRAIN_ARGS` are the ultralytics training arguments that let `YOLO("yolov8n.yaml")` learn
this data in a few one-CPU-thread epochs of a few seconds each, and `DEMO_SPACE` the space the
demo searches: good and bad lr0 differ clearly within 6 epochs, so ASHA has trials to stop.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw

CLASS_NAMES = ("circle", "rectangle", "triangle")
GENERATOR_VERSION = 2  # bump when the drawing changes, so old datasets are regenerated
MARKER = ".hpctune-demo-complete.json"
OBJECT_SIZE = (0.35, 0.7)  # object side / image side: large objects are learnt in few steps
MAX_OBJECTS = 4  # 1..4 per image; fewer when large ones leave no room
NOISE_STD = 8.0  # background pixel noise

DrawImage = Callable[[int, np.random.Generator], tuple[Image.Image, list[str]]]

DEMO_MODEL = "yolov8n.yaml"  # built from yaml: no weights download
DEMO_DATASET: dict[str, int] = {"n_train": 256, "n_val": 64, "imgsz": 64}

# Measured with one CPU thread on a busy 2-core machine: 3.5-5 s per epoch (train + val); after 6
# epochs mAP50-95 0.17-0.35 with lr0=1e-3 (momentum 0.9), 0.02 with 3e-4, ~0 with 1e-5 and 1e-2.
# SGD (lr0 0.02-0.2) stayed below 0.03 in 6 epochs, hence AdamW. Scores rise from epoch 4 on.
DEMO_TRAIN_ARGS: dict[str, object] = {
    "imgsz": 64, "batch": 8, "nbs": 8,  # nbs == batch: an optimizer step per batch, 32 per epoch
    "optimizer": "AdamW",  # not "auto", which ignores lr0 and momentum
    "warmup_epochs": 0, "mosaic": 0.0, "close_mosaic": 0,  # augmentation slows early learning
    "hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0, "translate": 0.0, "scale": 0.0,
    "workers": 0, "amp": False, "plots": False, "val": True, "deterministic": False,
}

# hpctune.yolo.space format; the good region (lr0 ~1e-3) lies inside, bad ones on both sides.
DEMO_SPACE: dict[str, dict[str, list[float]]] = {
    "lr0": {"loguniform": [1e-5, 1e-2]},
    "momentum": {"uniform": [0.6, 0.98]},
}


def demo_spec_arguments(data: Path) -> dict[str, object]:
    """The `hpctune.yolo.arguments.build_spec` arguments of the demo search on the dataset at `data`."""
    return {"model": DEMO_MODEL, "data": str(data), "space": DEMO_SPACE,
            "train_args": dict(DEMO_TRAIN_ARGS)}


def make_demo_dataset(
    root: Path, *, n_train: int = 256, n_val: int = 64, imgsz: int = 64, seed: int = 0
) -> Path:
    """Create (or reuse) the shapes dataset in folder `root`; return the path of its data.yaml."""
    if n_train < 1 or n_val < 1 or imgsz < 32:
        raise ValueError(f"need n_train >= 1, n_val >= 1, imgsz >= 32; got {n_train}, {n_val}, {imgsz}")
    root = Path(root).expanduser().resolve()
    params = {"version": GENERATOR_VERSION, "n_train": n_train, "n_val": n_val, "imgsz": imgsz,
              "seed": seed, "object_size": list(OBJECT_SIZE), "max_objects": MAX_OBJECTS,
              "noise_std": NOISE_STD}
    return build_dataset(root, params, CLASS_NAMES, _draw_image, n_train=n_train, n_val=n_val, imgsz=imgsz,
                         seed=seed)


def build_dataset(root: Path, params: dict, class_names: tuple[str, ...], draw_image: DrawImage, *, n_train: int,
                  n_val: int, imgsz: int, seed: int) -> Path:
    """Write a YOLO detection dataset of `draw_image(size, rng) -> (image, label rows)` images into `root`,
    complete or not at all, reused when its marker holds the same `params`; return its data.yaml."""
    if _is_complete(root, params):
        return root / "data.yaml"
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private
    try:
        for split_index, (split, count) in enumerate((("train", n_train), ("val", n_val))):
            _write_split(tmp, split, count, imgsz, np.random.default_rng([seed, split_index]), draw_image)
        data = {"path": str(root), "train": str(root / "images" / "train"),
                "val": str(root / "images" / "val"), "names": dict(enumerate(class_names))}
        (tmp / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        (tmp / MARKER).write_text(json.dumps(params, sort_keys=True))
        if _is_complete(root, params):  # another process finished meanwhile
            return root / "data.yaml"
        if root.exists():  # stale: other parameters, or an interrupted older generation
            _remove(root)
        try:
            os.rename(tmp, root)
        except OSError:  # another process finished first
            if not _is_complete(root, params):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root / "data.yaml"


def _is_complete(root: Path, params: dict) -> bool:
    try:
        return json.loads((root / MARKER).read_text()) == params
    except (OSError, ValueError):
        return False


def _remove(path: Path) -> None:
    """Delete a folder; rename it away first so a half-deleted one is never seen under its name."""
    trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    try:
        os.rename(path, trash / "old")
    except FileNotFoundError:
        pass
    shutil.rmtree(trash, ignore_errors=True)


def _write_split(base: Path, split: str, count: int, imgsz: int, rng: np.random.Generator,
                 draw_image: DrawImage) -> None:
    image_dir, label_dir = base / "images" / split, base / "labels" / split
    image_dir.mkdir(parents=True)
    label_dir.mkdir(parents=True)
    for index in range(count):
        image, rows = draw_image(imgsz, rng)
        image.save(image_dir / f"{index:05d}.png")
        (label_dir / f"{index:05d}.txt").write_text("".join(rows))


def _draw_image(size: int, rng: np.random.Generator) -> tuple[Image.Image, list[str]]:
    """One image with 1-4 non-overlapping shapes; returns it and its YOLO label rows."""
    background = rng.integers(0, 256, 3)
    pixels = background + rng.normal(0, NOISE_STD, (size, size, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    boxes: list[tuple[int, int, int, int]] = []
    rows: list[str] = []
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        cls = int(rng.integers(len(CLASS_NAMES)))
        box = _place_box(size, boxes, rng, square=cls == 0)
        if box is None:
            continue
        boxes.append(box)
        colour = _contrasting_colour(background, rng)
        x0, y0, x1, y1 = box
        if cls == 0:
            draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=colour)
        elif cls == 1:
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=colour)
        else:  # triangle: base along the bottom edge, apex somewhere on the top edge
            apex = x0 + float(rng.uniform(0, x1 - 1 - x0))
            draw.polygon([(x0, y1 - 1), (x1 - 1, y1 - 1), (apex, y0)], fill=colour)
        cx, cy, w, h = (x0 + x1) / 2 / size, (y0 + y1) / 2 / size, (x1 - x0) / size, (y1 - y0) / size
        rows.append(f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
    return image, rows


def _place_box(size: int, taken: list[tuple[int, int, int, int]], rng: np.random.Generator,
               square: bool = False, tries: int = 20) -> tuple[int, int, int, int] | None:
    """A random box (x0, y0, x1, y1), pixel edges, inside the image and apart from `taken`."""
    low, high = (max(4, round(f * size)) for f in OBJECT_SIZE)
    for _ in range(tries):
        w, h = (int(v) for v in rng.integers(low, high + 1, 2))
        h = w if square else h
        x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
        box = (x0, y0, x0 + w, y0 + h)
        if all(box[2] <= t[0] or t[2] <= box[0] or box[3] <= t[1] or t[3] <= box[1] for t in taken):
            return box
    return None


def _contrasting_colour(background: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int]:
    """A random colour far enough from the background to be visible through the noise."""
    while True:
        colour = rng.integers(0, 256, 3)
        if np.abs(colour - background).sum() >= 150:
            return tuple(int(c) for c in colour)
