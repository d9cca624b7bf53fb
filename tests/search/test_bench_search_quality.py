"""The search-quality benchmark (scripts/bench_search_quality.py) and its dataset (scripts/hard_shapes.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import hard_shapes
import pytest
import yaml
from hard_shapes import CLASS_NAMES, MARKER, make_hard_dataset
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "bench_search_quality.py"
SMALL = {"n_train": 10, "n_val": 4, "imgsz": 64}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in {".png", ".txt"}}


def test_hard_dataset_is_valid_deterministic_and_reused(tmp_path: Path) -> None:
    data_yaml = make_hard_dataset(tmp_path / "a", seed=5, **SMALL)
    root = (tmp_path / "a").resolve()
    assert data_yaml == root / "data.yaml"
    data = yaml.safe_load(data_yaml.read_text())
    assert Path(data["path"]) == root and list(data["names"].values()) == list(CLASS_NAMES)
    assert len(CLASS_NAMES) >= 6
    boxes = 0
    for split in ("train", "val"):
        images = sorted(Path(data[split]).glob("*.png"))
        assert Path(data[split]).is_absolute() and len(images) == SMALL[f"n_{split}"]
        for image_path in images:
            with Image.open(image_path) as image:
                assert image.size == (SMALL["imgsz"],) * 2 and image.mode == "RGB"
            label = root / "labels" / split / f"{image_path.stem}.txt"
            rows = [line.split() for line in label.read_text().splitlines()]
            assert 1 <= len(rows) <= hard_shapes.OBJECTS[1]
            for cls, *coords in rows:
                cx, cy, w, h = map(float, coords)
                assert 0 <= int(cls) < len(CLASS_NAMES)
                assert 0 < w <= hard_shapes.OBJECT_SIZE[1] + 0.05 and 0 < h <= hard_shapes.OBJECT_SIZE[1] + 0.05
                assert cx - w / 2 >= -1e-6 and cx + w / 2 <= 1 + 1e-6
                assert cy - h / 2 >= -1e-6 and cy + h / 2 <= 1 + 1e-6
                boxes += 1
    assert boxes >= 2 * (SMALL["n_train"] + SMALL["n_val"])  # several objects per image

    # Same seed: identical files; another seed: different ones.
    make_hard_dataset(tmp_path / "b", seed=5, **SMALL)
    make_hard_dataset(tmp_path / "c", seed=6, **SMALL)
    assert _files(root) == _files(tmp_path / "b")
    assert _files(root) != _files(tmp_path / "c")

    # A finished dataset with the same parameters is reused untouched; other parameters rebuild it.
    marker = root / MARKER
    stamp = marker.stat().st_mtime_ns
    (root / "images" / "train" / "extra.png").write_bytes(b"kept if reused")
    assert make_hard_dataset(root, seed=5, **SMALL) == data_yaml
    assert marker.stat().st_mtime_ns == stamp and (root / "images" / "train" / "extra.png").exists()
    make_hard_dataset(root, seed=5, **{**SMALL, "n_train": 11})
    assert len(list((root / "images" / "train").glob("*.png"))) == 11
    assert not list(tmp_path.glob(".a.*"))  # no temporary or trash folders left behind


@pytest.mark.slow
def test_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    command = [sys.executable, str(SCRIPT), "--trials", "2", "--epochs", "2", "--grace", "1", "--seeds", "0",
               "--rows", "untuned", "ultralytics-genetic", "--n-train", "32", "--n-val", "16", "--imgsz", "64",
               "--workdir", str(tmp_path / "work"), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = {line.split()[0]: line.split() for line in done.stdout.splitlines()
             if line.split() and line.split()[0] in {"untuned", "ultralytics-genetic"}}
    assert set(table) == {"untuned", "ultralytics-genetic"}
    for fields in table.values():
        float(fields[1])  # mean best mAP50-95
    report = json.loads(out.read_text())
    assert report["settings"]["trials"] == 2 and report["settings"]["n_train"] == 32
    untuned, genetic = report["summary"]["untuned"], report["summary"]["ultralytics-genetic"]
    assert untuned["epochs"] == 2 and genetic["epochs"] == 4
    assert report["runs"]["ultralytics-genetic"]["0"]["trials"] == 2
    for row in (untuned, genetic):
        assert 0 <= row["best_mean"] <= 1 and row["wall_s"] > 0 and row["failed_seeds"] == []
    assert str(out) in done.stdout


@pytest.mark.slow
def test_shared_init_gives_every_row_of_a_seed_the_same_initial_weights(tmp_path: Path) -> None:
    work = tmp_path / "work"
    command = [sys.executable, str(SCRIPT), "--trials", "2", "--epochs", "1", "--grace", "1", "--seeds", "0", "1",
               "--rows", "untuned", "ultralytics-genetic", "--n-train", "16", "--n-val", "8", "--imgsz", "64",
               "--shared-init", "--workdir", str(work)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "shared initial weights" in done.stdout
    assert json.loads((work / "results.json").read_text())["settings"]["shared_init"] is True
    import torch

    weights = {seed: torch.load(work / "init" / f"seed{seed}.pt", weights_only=False)["model"].state_dict()
               for seed in (0, 1)}
    assert not all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # one draw per seed
    for seed in (0, 1):
        untuned = yaml.safe_load((work / "runs" / f"untuned-seed{seed}" / "untuned" / "args.yaml").read_text())
        assert untuned["model"] == str(work / "init" / f"seed{seed}.pt")
        log = (work / "runs" / f"ultralytics-genetic-seed{seed}" / "output.log").read_text()
        assert f"seed{seed}.pt" in log and log.count("Transferred 349/355 items") == 2  # both iterations


def _results(path: Path, seeds: dict[int, tuple[float, float]], trials: int = 8, grace: int = 3,
             rows: tuple[str, ...] = ("ultralytics-genetic", "hpctune-random")) -> Path:
    """A results file as the benchmark writes it: per seed, the genetic Tuner's and hpctune's best."""
    settings = {"trials": trials, "epochs": 10, "grace": grace, "seeds": sorted(seeds), "imgsz": 96, "batch": 16,
                "n_train": 384, "n_val": 96, "model": "yolov8n.yaml"}
    runs = {"ultralytics-genetic": {str(s): {"best": g, "epochs": 80, "wall_s": 300.0} for s, (g, _) in seeds.items()},
            "hpctune-random": {str(s): {"best": h, "epochs": 50, "wall_s": 100.0} for s, (_, h) in seeds.items()}}
    path.write_text(json.dumps({"settings": settings, "runs": {row: runs[row] for row in rows}}))
    return path


def test_merge_joins_the_seeds_of_several_runs_and_pairs_them_by_seed(tmp_path: Path) -> None:
    first = _results(tmp_path / "a.json", {0: (0.10, 0.14), 1: (0.20, 0.10)})
    second = _results(tmp_path / "b.json", {2: (0.10, 0.16)})
    out = tmp_path / "merged.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--merge", str(first), str(second), "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["settings"]["seeds"] == [0, 1, 2]
    assert report["summary"]["hpctune-random"]["best_mean"] == pytest.approx(0.40 / 3)
    paired = report["ratios"]["hpctune-random"]["ultralytics-genetic"]
    assert paired["paired_seeds"] == 3 and paired["better_on"] == 2
    # Differences +0.04, -0.10, +0.06: mean 0, standard error sd / sqrt(3).
    assert paired["diff_mean"] == pytest.approx(0.0) and paired["diff_se"] == pytest.approx(0.0076**0.5 / 3**0.5)
    assert "better on 2 of 3 seeds" in done.stdout

    other_budget = _results(tmp_path / "c.json", {3: (0.1, 0.1)}, trials=30)
    refused = subprocess.run([sys.executable, str(SCRIPT), "--merge", str(first), str(other_budget)],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "another budget" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    shared = _results(tmp_path / "s.json", {3: (0.1, 0.1)})  # the same budget, every row from shared weights
    report = json.loads(shared.read_text())
    shared.write_text(json.dumps({**report, "settings": {**report["settings"], "shared_init": True}}))
    refused = subprocess.run([sys.executable, str(SCRIPT), "--merge", str(first), str(shared)],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "another budget" in refused.stderr


def test_merge_joins_rows_without_early_stops_to_runs_of_another_grace_but_not_searches(tmp_path: Path) -> None:
    """The genetic Tuner trains every trial fully: its runs pair with hpctune's at any grace period."""
    genetic = _results(tmp_path / "g.json", {0: (0.10, 0.0)}, grace=3, rows=("ultralytics-genetic",))
    searches = _results(tmp_path / "h.json", {0: (0.0, 0.12)}, grace=10, rows=("hpctune-random",))
    out = tmp_path / "merged.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--merge", str(genetic), str(searches), "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["settings"]["grace"] == 10
    assert report["ratios"]["hpctune-random"]["ultralytics-genetic"]["better_on"] == 1
    other = _results(tmp_path / "h3.json", {1: (0.0, 0.1)}, grace=3, rows=("hpctune-random",))
    refused = subprocess.run([sys.executable, str(SCRIPT), "--merge", str(searches), str(other)],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "one grace period only" in refused.stderr
    mixed = _results(tmp_path / "m.json", {0: (0.10, 0.05)}, grace=3)  # a grace-3 search beside the genetic row
    chosen = subprocess.run([sys.executable, str(SCRIPT), "--merge", str(mixed), str(searches), "--rows",
                             "ultralytics-genetic", "hpctune-random"], capture_output=True, text=True, timeout=60)
    assert chosen.returncode != 0 and "one grace period only" in chosen.stderr
    peers = tmp_path / "peers.json"  # the genetic row alone, then joined to the grace-10 searches
    for command in (["--merge", str(mixed), "--rows", "ultralytics-genetic", "--out", str(peers)],
                    ["--merge", str(peers), str(searches), "--out", str(out)]):
        joined = subprocess.run([sys.executable, str(SCRIPT), *command], capture_output=True, text=True, timeout=60)
        assert joined.returncode == 0, joined.stderr
    assert json.loads(out.read_text())["summary"]["ultralytics-genetic"]["best_mean"] == pytest.approx(0.10)

