"""hpctune: ASHA hyperparameter search for Ultralytics YOLO with Ray Tune, on one machine or a SLURM allocation."""

from hpctune.errors import HpctuneError

__all__ = ["HpctuneError", "load_run", "resume", "tune"]


def __getattr__(name: str):
    # The API pulls in Ray and Ultralytics; import them only when the API is used.
    if name in {"tune", "resume", "load_run"}:
        from hpctune import api

        return getattr(api, name)
    raise AttributeError(name)
