"""Settings that keep Ultralytics quiet and offline in every trial process, on every node.

Ray workers inherit the raylet's environment, not the driver's, so these variables travel in
the runtime environment. Ultralytics reads its settings file at import, in each trial process.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# Integrations that would report, upload or download on their own; hpctune reports itself.
_OFF = ("sync", "raytune", "mlflow", "clearml", "comet", "dvc", "wandb", "tensorboard", "neptune")


def prepare(env_dir: Path) -> dict[str, str]:
    """Create the config folders under env_dir and return the environment trial processes need."""
    yolo_dir = env_dir / "ultralytics"
    settings_dir = yolo_dir / "Ultralytics"
    settings_dir.mkdir(parents=True, exist_ok=True)
    _install_fonts(settings_dir)
    _write_settings(settings_dir / "settings.json", env_dir)
    return {
        "YOLO_CONFIG_DIR": str(yolo_dir),
        "YOLO_OFFLINE": "1",
        "YOLO_VERBOSE": "False",
        "MPLCONFIGDIR": str(env_dir / "matplotlib"),
        "WANDB_DIR": str(env_dir / "wandb"),
        "WANDB_SILENT": "true",
        "HF_HUB_OFFLINE": "1",
    }


def _install_fonts(folder: Path) -> None:
    """Ultralytics requests Arial.ttf from the internet on every dataset check unless it is present."""
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        if not (folder / name).exists():
            shutil.copyfile(source, folder / name)


def _write_settings(file: Path, env_dir: Path) -> None:
    from ultralytics.utils import SettingsManager

    settings = SettingsManager(file=file)
    wanted = {key: False for key in _OFF if key in settings}
    wanted["runs_dir"] = str(env_dir / "runs")
    if any(settings.get(key) != value for key, value in wanted.items()):
        settings.update(wanted)
