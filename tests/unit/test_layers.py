"""The package's layers, checked from its source: lower layers never import higher ones (lazy imports
inside functions included), and no module imports itself back through others."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "hpctune"
# A module may import its own layer and the layers below it, never one above.
LAYERS = {
    "errors": 0, "ray_compat": 0,
    "run": 1, "slurm": 1,
    "raycluster": 2,
    "engine": 3,
    "yolo": 4, "report": 4,
    "jobs": 5,
    "api": 6, "testing": 6,
    "cli": 7, "__main__": 8,
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, known: set[str]) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hpctune"):
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                names.add(child if child in known else node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("hpctune"))
    return names - {"hpctune"}


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    return LAYERS.get(top, -1)


MODULES = _modules()
GRAPH = {name: _imports(path, set(MODULES)) for name, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "hpctune"))
def test_imports_stay_in_lower_layers(module):
    assert _layer(module) >= 0, f"{module}: put its folder in LAYERS"
    upward = sorted(i for i in GRAPH[module] if _layer(i) > _layer(module))
    assert not upward, f"{module} (layer {_layer(module)}) imports higher layers: {upward}"


def test_no_import_circles():
    circles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(GRAPH.get(node, ())):
            if nxt == path[0]:
                circles.append(" -> ".join([*path, nxt]))
            elif nxt not in path and nxt in GRAPH and len(path) < 12:
                visit(nxt, [*path, nxt])

    for start in sorted(GRAPH):
        if start != "hpctune":
            visit(start, [start])
    assert not circles, "\n".join(sorted(set(circles))[:10])


def test_private_ray_names_only_in_ray_compat():
    offenders = []
    for name, path in MODULES.items():
        if name == "hpctune.ray_compat":
            continue
        text = path.read_text()
        for needle in ("ray._", "_raylet", "gcs_pb2", "._local_tuner", "_tune_config", "._brackets", "TuneController",
                       "_ExperimentCheckpointManager", "run_metadata"):
            if needle in text:
                offenders.append(f"{name}: {needle}")
    assert not offenders, offenders
