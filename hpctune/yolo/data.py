"""Dataset and model checks. Trials run in another working directory on other nodes, so every
path is made absolute here, and a dataset that cannot work is refused before any trial starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hpctune.errors import DataError


def resolve_model(model: str, task: str | None = None) -> tuple[str, str]:
    """Return (model as an absolute path or a yaml name ultralytics ships, task)."""
    from ultralytics.nn.tasks import guess_model_task, yaml_model_load

    path = Path(model).expanduser()
    if path.is_file():
        model = str(path.resolve())
    if path.suffix in {".yaml", ".yml"} and (path.is_file() or path.parent == Path(".")):
        try:
            config = yaml_model_load(model)  # a file, or a config shipped with ultralytics, e.g. yolov8n.yaml
        except Exception:
            raise DataError(
                f"model {model} not found: give a path to a .pt or model .yaml file, or a name like yolov8n.yaml"
            ) from None
        return model, task or guess_model_task(config)
    if not path.is_file():
        raise DataError(
            f"model file {model} not found: give an existing .pt or model .yaml path "
            "(compute nodes cannot download weights)"
        )
    if task:
        return model, task
    from ultralytics.nn.tasks import load_checkpoint

    try:
        return model, guess_model_task(load_checkpoint(model)[0])
    except Exception as exc:
        raise DataError(f"model file {model} cannot be loaded ({exc.__class__.__name__}): give a valid .pt") from None


def resolve_data(data: str, task: str) -> tuple[str, dict[str, Any]]:
    """Return (absolute dataset path, the dataset yaml with absolute paths; {} for folder datasets)."""
    path = Path(data).expanduser()
    if not path.exists():
        raise DataError(f"dataset {data} not found: give the path of a data.yaml (or a folder for classify)")
    path = path.resolve()
    if path.is_dir():
        if task != "classify":
            raise DataError(f"dataset {data} is a folder: {task} needs a data.yaml file")
        if not (path / "train").is_dir() or not any((path / s).is_dir() for s in ("val", "test")):
            raise DataError(f"dataset folder {data} needs train/ and val/ subfolders")
        return str(path), {}
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"dataset {data} is not valid YAML ({str(exc).splitlines()[0]}): fix the file") from None
    if not isinstance(config, dict):
        raise DataError(f"dataset {data} must be a YAML mapping with train, val and names")
    missing = [key for key in ("train", "val") if not config.get(key)]
    if missing:
        raise DataError(f"dataset {data} has no '{missing[0]}' entry: add {missing[0]}: path/to/images")
    if "names" not in config and "nc" not in config:
        raise DataError(f"dataset {data} has no 'names': add names: {{0: class0, ...}}")
    root = _dataset_root(config.get("path"), path.parent)
    config["path"] = str(root)
    for split in ("train", "val", "test"):
        for entry in _as_list(config.get(split)):
            if not (root / entry).exists():
                raise DataError(
                    f"dataset {data}: {split} path {root / entry} does not exist: fix '{split}' or 'path' in it"
                )
    return str(path), config


def _dataset_root(path_entry: str | None, yaml_dir: Path) -> Path:
    """Ultralytics reads a relative `path` against its datasets folder; the yaml's own folder is what
    users mean when the dataset sits beside it, so that is tried first."""
    if not path_entry:
        return yaml_dir
    root = Path(path_entry).expanduser()
    if root.is_absolute():
        return root
    beside = (yaml_dir / root).resolve()
    if beside.exists():
        return beside
    from ultralytics.utils import DATASETS_DIR

    return (Path(DATASETS_DIR) / root).resolve()


def _as_list(value: Any) -> list[str]:
    if not value:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def write_data_yaml(config: dict[str, Any], target: Path) -> None:
    from hpctune.run.rundir import atomic_write_text

    atomic_write_text(target, yaml.safe_dump(config, sort_keys=False))
