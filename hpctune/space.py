"""Search spaces: the default YOLO space, user spaces from dicts or YAML/JSON files, sampling.

A space is kept as plain data, `{key: {"uniform": [lo, hi]}}` or `{key: value}` for a fixed value,
so that it can be written to the run manifest and read back identically on any node. Configurations
are sampled here with a seeded numpy generator, not by Ray, so that a seed gives the same trials
whatever the Ray version, and every sampled configuration is recorded before anything runs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hpctune.errors import SpecError

# The search space of Ultralytics' original `model.tune()` documentation.
DEFAULT_SPACE: dict[str, dict[str, list[float]]] = {
    "lr0": {"uniform": [1e-5, 1e-1]},
    "lrf": {"uniform": [0.01, 1.0]},
    "momentum": {"uniform": [0.6, 0.98]},
    "weight_decay": {"uniform": [0.0, 0.001]},
    "warmup_epochs": {"uniform": [0.0, 5.0]},
    "warmup_momentum": {"uniform": [0.0, 0.95]},
    "box": {"uniform": [0.02, 0.2]},
    "cls": {"uniform": [0.2, 4.0]},
    "fl_gamma": {"uniform": [0.0, 2.0]},
    "hsv_h": {"uniform": [0.0, 0.1]},
    "hsv_s": {"uniform": [0.0, 0.9]},
    "hsv_v": {"uniform": [0.0, 0.9]},
    "degrees": {"uniform": [0.0, 45.0]},
    "translate": {"uniform": [0.0, 0.9]},
    "scale": {"uniform": [0.0, 0.9]},
    "shear": {"uniform": [0.0, 10.0]},
    "perspective": {"uniform": [0.0, 0.001]},
    "flipud": {"uniform": [0.0, 1.0]},
    "fliplr": {"uniform": [0.0, 1.0]},
    "mosaic": {"uniform": [0.0, 1.0]},
    "mixup": {"uniform": [0.0, 1.0]},
    "copy_paste": {"uniform": [0.0, 1.0]},
}

DISTRIBUTIONS = ("uniform", "loguniform", "quniform", "randint", "choice")
_EXAMPLE = "e.g. lr0: {loguniform: [1e-5, 1e-1]}"


def training_argument_names() -> set[str]:
    """The training arguments the installed ultralytics accepts."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return set(DEFAULT_CFG_DICT)


def default_space() -> dict[str, Any]:
    """The default space, less the keys the installed ultralytics no longer accepts."""
    known = training_argument_names()
    return {key: dist for key, dist in DEFAULT_SPACE.items() if key in known}


def default_space_note() -> str | None:
    """The log line that says which default keys this ultralytics does not accept."""
    left_out = sorted(set(DEFAULT_SPACE) - training_argument_names())
    if not left_out:
        return None
    return f"default space: {', '.join(left_out)} left out (not training arguments of this ultralytics)"


def load_space(source: str | Path | dict | None) -> dict[str, Any]:
    """Read a space from None (the default), a dict (plain or ray.tune domains), or a YAML/JSON file."""
    if source is None:
        return default_space()
    if isinstance(source, dict):
        raw = {key: _from_ray_domain(key, value) for key, value in source.items()}
        origin = "space"
    else:
        path = Path(source)
        if not path.is_file():
            raise SpecError(f"space file {path} not found: give the path of a YAML or JSON file ({_EXAMPLE})")
        try:
            text = path.read_text()
            raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            reason = str(exc).splitlines()[0]
            raise SpecError(f"space file {path} cannot be parsed ({reason}): fix its syntax") from exc
        if not isinstance(raw, dict) or not raw:
            raise SpecError(f"space file {path} must map training arguments to distributions ({_EXAMPLE})")
        origin = f"space file {path}"
    return validate_space(raw, origin)


def validate_space(raw: dict, origin: str = "space") -> dict[str, Any]:
    """Check every key and distribution; return the space in its canonical plain form."""
    known = training_argument_names()
    space: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise SpecError(
                f"{origin}: '{key}' is not an ultralytics training argument: remove it or fix its name"
            )
        space[key] = _check_distribution(origin, key, value)
    return space


def _check_distribution(origin: str, key: str, value: Any) -> Any:
    if not isinstance(value, dict):
        return value  # a fixed value
    if len(value) != 1:
        raise SpecError(f"{origin}: '{key}' must name exactly one distribution ({_EXAMPLE})")
    (kind, args), = value.items()
    if kind not in DISTRIBUTIONS:
        raise SpecError(
            f"{origin}: '{key}' uses unknown distribution '{kind}': use one of {', '.join(DISTRIBUTIONS)}"
        )
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise SpecError(f"{origin}: '{key}' choice needs a non-empty list of values, e.g. choice: [SGD, AdamW]")
        return {kind: list(args)}
    wanted = 3 if kind == "quniform" else 2
    if not isinstance(args, list) or len(args) != wanted or not all(_is_number(a) for a in args):
        shape = "[low, high, step]" if kind == "quniform" else "[low, high]"
        raise SpecError(f"{origin}: '{key}' {kind} needs {shape} as numbers")
    low, high = args[0], args[1]
    if not low < high:
        raise SpecError(f"{origin}: '{key}' {kind} has low {low} >= high {high}: make low smaller than high")
    if kind == "loguniform" and low <= 0:
        raise SpecError(f"{origin}: '{key}' loguniform needs low > 0 (got {low}): use uniform or a positive low")
    if kind == "quniform" and args[2] <= 0:
        raise SpecError(f"{origin}: '{key}' quniform needs a step > 0 (got {args[2]})")
    if kind == "randint" and not all(float(a).is_integer() for a in args):
        raise SpecError(f"{origin}: '{key}' randint needs whole numbers [low, high) (got {args})")
    return {kind: [float(a) if kind != "randint" else int(a) for a in args]}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _from_ray_domain(key: str, value: Any) -> Any:
    """Turn a ray.tune domain (tune.uniform(...) etc.) into the plain form; other values pass through."""
    from ray.tune.search import sample

    if not isinstance(value, sample.Domain):
        return value
    sampler = value.get_sampler()
    if isinstance(value, sample.Categorical):
        return {"choice": list(value.categories)}
    if isinstance(sampler, sample.Quantized):
        return {"quniform": [value.lower, value.upper, sampler.q]}
    if isinstance(value, sample.Integer) and isinstance(sampler, sample.Uniform):
        return {"randint": [value.lower, value.upper]}
    if isinstance(value, sample.Float) and isinstance(sampler, sample.LogUniform):
        return {"loguniform": [value.lower, value.upper]}
    if isinstance(value, sample.Float) and isinstance(sampler, sample.Uniform):
        return {"uniform": [value.lower, value.upper]}
    raise SpecError(
        f"space: '{key}' uses a ray.tune domain hpctune cannot record ({type(value).__name__}): "
        "use uniform, loguniform, quniform, randint or choice"
    )


def searched_keys(space: dict[str, Any]) -> list[str]:
    return [key for key, value in space.items() if isinstance(value, dict)]


def sample_configs(space: dict[str, Any], count: int, seed: int) -> list[dict[str, Any]]:
    """Draw `count` configurations; the same space, count and seed always give the same list."""
    rng = np.random.default_rng(seed)
    return [{key: _draw(rng, value) for key, value in space.items()} for _ in range(count)]


def _draw(rng: np.random.Generator, value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    (kind, args), = value.items()
    if kind == "uniform":
        return float(rng.uniform(args[0], args[1]))
    if kind == "loguniform":
        return float(math.exp(rng.uniform(math.log(args[0]), math.log(args[1]))))
    if kind == "quniform":
        low, high, step = args
        drawn = round(rng.uniform(low, high) / step) * step
        return float(min(max(drawn, low), high))
    if kind == "randint":
        return int(rng.integers(args[0], args[1]))
    return args[int(rng.integers(len(args)))]  # choice


def to_ray_space(space: dict[str, Any]) -> dict[str, Any]:
    """The same space as ray.tune domains, so Ray shows and checks the ranges of the sampled values."""
    from ray import tune

    makers = {
        "uniform": tune.uniform, "loguniform": tune.loguniform, "quniform": tune.quniform,
        "randint": tune.randint, "choice": tune.choice,
    }
    ray_space = {}
    for key, value in space.items():
        if isinstance(value, dict):
            (kind, args), = value.items()
            ray_space[key] = makers[kind](args) if kind == "choice" else makers[kind](*args)
        else:
            ray_space[key] = value
    return ray_space
