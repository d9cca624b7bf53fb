"""A synthetic YOLO detection dataset on which training hyperparameters matter.

Harder than hpctune's demo data (3 classes of large shapes, 35-70 % of the image side, on a plain
background): 6 shape classes, 1-5 smaller objects per image (12-35 % of the side), a textured
background of colour patches and pixel noise, unlabelled clutter (lines, irregular blobs, arcs;
some lines cross the objects) and random colours.

Sized so that hyperparameters matter within a 10-epoch budget. Measured on 2 CPU cores, 384 train
images at 96 px, batch 16, 10 epochs of `YOLO("yolov8n.yaml")` (about 4 s each): Ultralytics'
defaults (optimizer auto: AdamW at lr 0.001, warm-up 3 epochs) reach mAP50-95 0.005 (two seeds),
AdamW at lr0 0.01 with the default augmentation 0.03-0.14 (three runs), lr0 0.003 without
augmentation 0.02; Ultralytics' searches found 0.04-0.16 in 8 trials. With smaller objects (7-22 %)
and 8 classes the best configuration stayed below 0.02: too close to zero to rank searches.

`make_hard_dataset(root)` writes PNG images, YOLO label txt files and a `data.yaml` with absolute
paths. It is deterministic for a seed, builds in a temporary sibling folder that is renamed into
place only when complete, and reuses at once a finished dataset made with the same parameters
(recorded in a marker file).

    python scripts/hard_shapes.py /tmp/hard-shapes [--n-train 384] [--n-val 96] [--imgsz 96] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from hpctune.yolo.demo import MARKER, build_dataset  # noqa: F401  (MARKER: the completion marker's name)

CLASS_NAMES = ("circle", "rectangle", "triangle", "cross", "star", "ring")
GENERATOR_VERSION = 1  # bump when the drawing changes, so old datasets are regenerated
OBJECT_SIZE = (0.12, 0.35)  # longer side of an object / image side
OBJECTS = (1, 5)  # objects per image, inclusive (fewer when no free room is found)
CLUTTER = (2, 5)  # unlabelled clutter items per image, inclusive
NOISE_STD = 12.0  # pixel noise on the background
PATCH_GRID = 5  # the background's colour patches: a PATCH_GRID x PATCH_GRID grid, smoothly upscaled
MIN_CONTRAST = 120  # sum of absolute RGB differences between an object and the background under it


def make_hard_dataset(root: Path, n_train: int = 384, n_val: int = 96, imgsz: int = 96, seed: int = 0) -> Path:
    """Create (or reuse) the dataset in folder `root`; return the path of its data.yaml."""
    if n_train < 1 or n_val < 1 or imgsz < 32:
        raise ValueError(f"need n_train >= 1, n_val >= 1, imgsz >= 32; got {n_train}, {n_val}, {imgsz}")
    root = Path(root).expanduser().resolve()
    params = {"version": GENERATOR_VERSION, "n_train": n_train, "n_val": n_val, "imgsz": imgsz, "seed": seed,
              "classes": list(CLASS_NAMES), "object_size": list(OBJECT_SIZE), "objects": list(OBJECTS),
              "clutter": list(CLUTTER), "noise_std": NOISE_STD, "patch_grid": PATCH_GRID,
              "min_contrast": MIN_CONTRAST}
    return build_dataset(root, params, CLASS_NAMES, _draw_image, n_train=n_train, n_val=n_val, imgsz=imgsz,
                         seed=seed)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth colour patches plus pixel noise, float RGB (size, size, 3)."""
    grid = rng.integers(0, 256, (PATCH_GRID, PATCH_GRID, 3)).astype(np.uint8)
    patches = np.asarray(Image.fromarray(grid).resize((size, size), Image.BILINEAR), dtype=np.float64)
    return patches + rng.normal(0, NOISE_STD, (size, size, 3))


def _draw_image(size: int, rng: np.random.Generator) -> tuple[Image.Image, list[str]]:
    """One image with labelled shapes over unlabelled clutter; returns it and its YOLO label rows."""
    pixels = _background(size, rng)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    n_clutter = int(rng.integers(CLUTTER[0], CLUTTER[1] + 1))
    over = int(rng.integers(0, 3))  # clutter lines drawn over the objects, crossing some of them
    for _ in range(n_clutter - over):
        _clutter(draw, size, rng)
    boxes: list[tuple[int, int, int, int]] = []
    rows: list[str] = []
    for _ in range(int(rng.integers(OBJECTS[0], OBJECTS[1] + 1))):
        cls = int(rng.integers(len(CLASS_NAMES)))
        box = _place_box(size, boxes, rng, CLASS_NAMES[cls])
        if box is None:
            continue
        boxes.append(box)
        x0, y0, x1, y1 = box
        under = pixels[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)
        _draw_shape(draw, CLASS_NAMES[cls], box, _contrasting_colour(under, rng), rng)
        cx, cy, w, h = (x0 + x1) / 2 / size, (y0 + y1) / 2 / size, (x1 - x0) / size, (y1 - y0) / size
        rows.append(f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
    for _ in range(over):
        _line(draw, size, rng, width=1)
    return image, rows


def _random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def _contrasting_colour(background: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int]:
    """A random colour far enough from the background to be visible through the noise."""
    while True:
        colour = rng.integers(0, 256, 3)
        if np.abs(colour - background).sum() >= MIN_CONTRAST:
            return tuple(int(c) for c in colour)


def _line(draw: ImageDraw.ImageDraw, size: int, rng: np.random.Generator, width: int) -> None:
    x0, y0, x1, y1 = (float(v) for v in rng.uniform(0, size, 4))
    draw.line((x0, y0, x1, y1), fill=_random_colour(rng), width=width)


def _clutter(draw: ImageDraw.ImageDraw, size: int, rng: np.random.Generator) -> None:
    """An unlabelled distractor: a line, an irregular blob or an arc."""
    kind = int(rng.integers(3))
    if kind == 0:
        _line(draw, size, rng, width=int(rng.integers(1, 3)))
        return
    r = float(rng.uniform(0.03, 0.12)) * size
    cx, cy = (float(v) for v in rng.uniform(0, size, 2))
    if kind == 1:  # irregular blob: a polygon of random radii at sorted random angles
        n = int(rng.integers(5, 9))
        angles = np.sort(rng.uniform(0, 2 * math.pi, n))
        radii = rng.uniform(0.4, 1.0, n) * r
        draw.polygon([(cx + q * math.cos(a), cy + q * math.sin(a)) for a, q in zip(angles, radii, strict=True)],
                     fill=_random_colour(rng))
    else:  # an open arc, like part of a ring
        start = float(rng.uniform(0, 360))
        draw.arc((cx - r, cy - r, cx + r, cy + r), start, start + float(rng.uniform(60, 200)),
                 fill=_random_colour(rng), width=int(rng.integers(1, 3)))


def _place_box(size: int, taken: list[tuple[int, int, int, int]], rng: np.random.Generator, name: str,
               tries: int = 30) -> tuple[int, int, int, int] | None:
    """A random box (x0, y0, x1, y1), pixel edges, inside the image and apart from `taken` by 1 px."""
    low, high = (max(6, round(f * size)) for f in OBJECT_SIZE)
    for _ in range(tries):
        long = int(rng.integers(low, high + 1))
        if name in ("circle", "ring", "cross", "star"):
            w = h = long
        else:
            w, h = long, max(4, round(long * float(rng.uniform(0.5, 1.0))))
        if rng.integers(2):
            w, h = h, w
        x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
        box = (x0, y0, x0 + w, y0 + h)
        if all(box[2] < t[0] or t[2] < box[0] or box[3] < t[1] or t[3] < box[1] for t in taken):
            return box
    return None


def _star(points: int, inner: float) -> list[tuple[float, float]]:
    """A star polygon, normalised to span exactly [0, 1] on both axes."""
    pts = [((1 if i % 2 == 0 else inner) * math.sin(i * math.pi / points),
            -(1 if i % 2 == 0 else inner) * math.cos(i * math.pi / points)) for i in range(2 * points)]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return [((x - min(xs)) / (max(xs) - min(xs)), (y - min(ys)) / (max(ys) - min(ys))) for x, y in pts]


def _draw_shape(draw: ImageDraw.ImageDraw, name: str, box: tuple[int, int, int, int],
                colour: tuple[int, int, int], rng: np.random.Generator) -> None:
    """Draw shape `name` filling `box` (pixel edges x0, y0, x1, y1) exactly."""
    x0, y0, x1, y1 = box
    xe, ye = x1 - 1, y1 - 1  # last pixel inside
    w, h = xe - x0, ye - y0

    def at(u: float, v: float) -> tuple[float, float]:
        return x0 + u * w, y0 + v * h

    if name == "circle":
        draw.ellipse((x0, y0, xe, ye), fill=colour)
    elif name == "rectangle":
        draw.rectangle((x0, y0, xe, ye), fill=colour)
    elif name == "triangle":  # base along one edge, apex on the opposite one
        apex = float(rng.uniform(0, 1))
        if rng.integers(2):
            draw.polygon([at(0, 1), at(1, 1), at(apex, 0)], fill=colour)
        else:
            draw.polygon([at(0, 0), at(1, 0), at(apex, 1)], fill=colour)
    elif name == "cross":  # a plus sign, arms a third of the side thick
        t = float(rng.uniform(0.28, 0.4))
        a, b = (1 - t) / 2, (1 + t) / 2
        draw.rectangle((*at(a, 0), *at(b, 1)), fill=colour)
        draw.rectangle((*at(0, a), *at(1, b)), fill=colour)
    elif name == "star":
        draw.polygon([at(u, v) for u, v in _star(5, float(rng.uniform(0.38, 0.5)))], fill=colour)
    elif name == "ring":
        draw.ellipse((x0, y0, xe, ye), outline=colour, width=max(2, round(min(w, h) * 0.18)))
    else:
        raise ValueError(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--n-train", type=int, default=384)
    parser.add_argument("--n-val", type=int, default=96)
    parser.add_argument("--imgsz", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(make_hard_dataset(args.root, n_train=args.n_train, n_val=args.n_val, imgsz=args.imgsz, seed=args.seed))


if __name__ == "__main__":
    main()
