"""Search spaces: the named YOLO spaces, user spaces from dicts or YAML/JSON files, the baseline.

A space is kept as plain data, `{key: {"uniform": [lo, hi]}}` or `{key: value}` for a fixed value,
so that it can be written to the run manifest and read back identically on any node; the searchers
(hpctune.engine.searchers) draw from this form with seeded generators, not Ray's domains.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from hpctune.errors import SpecError

# The search space of Ultralytics' original `model.tune()` documentation (`--space seed`).
SEED_SPACE: dict[str, dict[str, list[float]]] = {
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


NAMED_SPACES = ("ultralytics", "seed")
DEFAULT_SPACE_NAME = "ultralytics"


def named_space(name: str) -> dict[str, Any]:
    """`seed`: the documented table, less the keys this ultralytics no longer accepts (fl_gamma);
    `ultralytics`: the default space of the installed Ultralytics' own Ray tuner, read from its source."""
    if name == "seed":
        known = training_argument_names()
        return {key: dist for key, dist in SEED_SPACE.items() if key in known}
    if name == "ultralytics":
        return ultralytics_ray_space()
    raise SpecError(f"space '{name}' is not a named space ({', '.join(NAMED_SPACES)}) or a file: check --space")


def named_space_note(name: str) -> str | None:
    """The log line that says which keys of a named space this ultralytics does not accept."""
    if name != "seed":
        return None
    left_out = sorted(set(SEED_SPACE) - training_argument_names())
    if not left_out:
        return None
    return f"space seed: {', '.join(left_out)} left out (not training arguments of this ultralytics)"


def ultralytics_ray_space() -> dict[str, Any]:
    """`default_space` of ultralytics.utils.tuner.run_ray_tune, parsed from the installed package's
    source (it is a local variable there), so the space follows Ultralytics upgrades."""
    import ast
    import inspect

    from ultralytics.utils import tuner

    makers = {"uniform": "uniform", "loguniform": "loguniform", "randint": "randint", "choice": "choice",
              "quniform": "quniform"}
    try:
        tree = ast.parse(inspect.getsource(tuner.run_ray_tune).lstrip())
        node = next(n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                    and any(isinstance(tg, ast.Name) and tg.id == "default_space" for tg in n.targets))
        space: dict[str, Any] = {}
        for key, call in zip(node.keys, node.values, strict=True):
            kind = makers[call.func.attr]
            args = [ast.literal_eval(a) for a in call.args]
            space[ast.literal_eval(key)] = {kind: args[0] if kind == "choice" else args}
    except (OSError, TypeError, ValueError, KeyError, StopIteration, AttributeError, SyntaxError) as exc:
        raise SpecError(
            f"the installed ultralytics' Ray search space cannot be read ({type(exc).__name__}): "
            "use --space seed or a space file"
        ) from None
    known = training_argument_names()
    return validate_space({k: v for k, v in space.items() if k in known}, "space ultralytics")


def ultralytics_mutation_gains() -> dict[str, float]:
    """The per-key gains of the installed Ultralytics' genetic Tuner (`(min, max, gain)` entries of its default
    space, parsed from Tuner.__init__'s source: momentum 0.3 in 8.4): how far its mutation moves each key,
    relative to the others. Empty if the source cannot be read (every key then moves alike)."""
    import ast
    import inspect

    from ultralytics.engine import tuner

    try:
        tree = ast.parse(inspect.getsource(tuner.Tuner.__init__).lstrip())
        spaces_found = [node for node in ast.walk(tree) if isinstance(node, ast.Dict) and node.values
                        and all(isinstance(value, ast.Tuple) for value in node.values)]
        return {ast.literal_eval(key): float(ast.literal_eval(value)[2]) for node in spaces_found
                for key, value in zip(node.keys, node.values, strict=True) if len(value.elts) == 3}
    except (OSError, TypeError, ValueError, SyntaxError, AttributeError):
        return {}


def range_notes(space: dict[str, Any]) -> list[str]:
    """Log lines for ranges that exclude the installed Ultralytics' default by more than a factor of 10."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    notes = []
    for key, dist in space.items():
        default = DEFAULT_CFG_DICT.get(key)
        if not isinstance(dist, dict) or not _is_number(default) or "choice" in dist:
            continue
        low, high = next(iter(dist.values()))[:2]
        if default > 10 * high or (low > 0 and default < low / 10):
            notes.append(f"space: {key} range [{low:g}, {high:g}] is far from Ultralytics' default {default:g}")
    return notes


def baseline_config(space: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    """The configuration of not tuning: every searched key at `fixed` (the resolved optimizer's
    values) or else the installed Ultralytics' default; fixed keys of the space as they are."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    config = {}
    for key, dist in space.items():
        if not isinstance(dist, dict):
            config[key] = dist
            continue
        value = fixed.get(key, DEFAULT_CFG_DICT.get(key))
        if "randint" in dist and _is_number(value):
            value = int(value)
        config[key] = value
    return config


def load_space(source: str | Path | dict | None) -> dict[str, Any]:
    """Read a space from None (the default), a name (ultralytics, seed), a dict (plain or ray.tune
    domains), or a YAML/JSON file."""
    if source is None:
        return named_space(DEFAULT_SPACE_NAME)
    if isinstance(source, str) and source in NAMED_SPACES:
        return named_space(source)
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
        for choice in args:
            _check_value(origin, key, choice)
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
    if kind == "randint" and not all(float(a).is_integer() and abs(a) < 2**31 for a in args):
        raise SpecError(f"{origin}: '{key}' randint needs whole numbers [low, high) below 2**31 (got {args})")
    fraction = key == "batch" and high <= 1  # batch below 1: a fraction of GPU memory, a real number
    if key in _whole_number_keys() and not fraction and not (kind == "randint" or (
            kind == "quniform" and all(float(a).is_integer() for a in args))):
        raise SpecError(f"{origin}: '{key}' is a whole number: use randint [low, high) or choice, not {kind}")
    _check_value(origin, key, low)
    _check_value(origin, key, high if kind != "randint" else high - 1)
    return {kind: [float(a) if kind != "randint" else int(a) for a in args]}


def _whole_number_keys() -> set[str]:
    """Ultralytics' integer arguments, and batch and imgsz: Ultralytics also takes them as floats (a GPU
    memory fraction; a stride-rounded size), but a searched range of them means whole numbers."""
    from ultralytics.cfg import CFG_INT_KEYS

    return set(CFG_INT_KEYS) | {"batch", "imgsz"}


def _check_value(origin: str, key: str, value: Any) -> None:
    """A value the search may give `key` must be one the installed Ultralytics accepts (type and range)."""
    from ultralytics.cfg import check_cfg

    try:
        check_cfg({key: value})
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{origin}: {str(exc).splitlines()[0]}") from None


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
