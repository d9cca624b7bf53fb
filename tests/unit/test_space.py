"""Search spaces: pure logic."""

import json

import pytest
from ray import tune

from hpctune.errors import SpecError
from hpctune.yolo.space import (
    SEED_SPACE,
    baseline_config,
    load_space,
    named_space,
    named_space_note,
    range_notes,
    ultralytics_mutation_gains,
)


def test_seed_space_is_the_original_table_less_keys_ultralytics_no_longer_has():
    assert len(SEED_SPACE) == 22
    space = load_space("seed")
    assert "fl_gamma" not in space  # not a training argument of current ultralytics
    assert set(space) == set(SEED_SPACE) - {"fl_gamma"}
    assert space["lr0"] == {"uniform": [1e-5, 1e-1]}
    assert space["degrees"] == {"uniform": [0.0, 45.0]}
    assert "fl_gamma" in named_space_note("seed")


def test_ultralytics_space_is_read_from_the_installed_package():
    import inspect

    from ultralytics.utils import tuner

    space = load_space(None)  # the default
    assert space == named_space("ultralytics")
    source = inspect.getsource(tuner.run_ray_tune)
    assert len(space) >= 20 and all(f'"{key}"' in source for key in space)
    assert space["box"] == {"uniform": [1.0, 20.0]} and space["close_mosaic"] == {"randint": [0, 11]}
    assert range_notes(space) == []  # every range holds Ultralytics' default (within a factor of 10)


def test_the_genetic_tuners_gains_are_read_from_the_installed_package():
    """A canary: Ultralytics 8.4's Tuner moves momentum 0.3 of the usual mutation step; if its source changes
    shape the gains are lost (every key then moves alike) and this test says so."""
    assert ultralytics_mutation_gains() == {"momentum": 0.3}


def test_range_far_from_the_default_gets_a_note():
    notes = range_notes(load_space("seed"))
    assert any(n.startswith("space: box range [0.02, 0.2]") for n in notes), notes


def test_baseline_is_ultralytics_defaults_with_the_resolved_values():
    from ultralytics.cfg import DEFAULT_CFG_DICT

    space = {"lr0": {"loguniform": [1e-4, 1e-2]}, "mosaic": {"uniform": [0, 1]}, "close_mosaic": {"randint": [0, 11]},
             "imgsz": 64}
    base = baseline_config(space, {"lr0": 0.00125})
    assert base == {"lr0": 0.00125, "mosaic": DEFAULT_CFG_DICT["mosaic"],
                    "close_mosaic": int(DEFAULT_CFG_DICT["close_mosaic"]), "imgsz": 64}


def test_space_file_yaml_and_json(tmp_path):
    yaml_file = tmp_path / "space.yaml"
    yaml_file.write_text(
        "lr0: {loguniform: [1.0e-5, 1.0e-1]}\nmosaic: {uniform: [0, 1]}\n"
        "batch: {choice: [8, 16]}\nclose_mosaic: {randint: [0, 5]}\nscale: {quniform: [0, 0.9, 0.1]}\n"
        "optimizer: SGD\n"
    )
    space = load_space(yaml_file)
    assert space["lr0"] == {"loguniform": [1e-5, 1e-1]}
    assert space["batch"] == {"choice": [8, 16]}
    assert space["optimizer"] == "SGD"
    json_file = tmp_path / "space.json"
    json_file.write_text(json.dumps({"lr0": {"uniform": [0.001, 0.01]}}))
    assert load_space(json_file) == {"lr0": {"uniform": [0.001, 0.01]}}


def test_ray_domains_are_recorded_as_plain_data():
    space = load_space({
        "lr0": tune.loguniform(1e-4, 1e-1), "momentum": tune.uniform(0.6, 0.9),
        "batch": tune.choice([8, 16]), "close_mosaic": tune.randint(0, 4), "scale": tune.quniform(0, 1, 0.25),
    })
    assert space == {
        "lr0": {"loguniform": [1e-4, 1e-1]}, "momentum": {"uniform": [0.6, 0.9]}, "batch": {"choice": [8, 16]},
        "close_mosaic": {"randint": [0, 4]}, "scale": {"quniform": [0.0, 1.0, 0.25]},
    }


@pytest.mark.parametrize("raw, words", [
    ({"lr0": {"choice": ["abc", -5]}}, "'lr0=abc' is of invalid type str"),
    ({"close_mosaic": {"uniform": [1, 10]}}, "'close_mosaic' is a whole number: use randint"),
    ({"close_mosaic": {"randint": [0, 2**40]}}, "randint needs whole numbers [low, high) below 2**31"),
    ({"mosaic": {"uniform": [0, 2]}}, "'mosaic=2' is an invalid value"),
    ({"nonsense": {"uniform": [0, 1]}}, "'nonsense' is not an ultralytics training argument"),
    ({"lr0": {"uniform": [0.1, 0.01]}}, "low 0.1 >= high 0.01"),
    ({"lr0": {"gaussian": [0, 1]}}, "unknown distribution 'gaussian'"),
    ({"lr0": {"loguniform": [0, 1]}}, "loguniform needs low > 0"),
    ({"lr0": {"uniform": [0, "a"]}}, "needs [low, high] as numbers"),
    ({"lr0": {"uniform": [0, 1], "choice": [1]}}, "exactly one distribution"),
    ({"batch": {"choice": []}}, "non-empty list"),
])
def test_bad_spaces_name_the_key_and_the_fix(raw, words):
    with pytest.raises(SpecError, match=None) as info:
        load_space(raw)
    assert words in str(info.value)


def test_a_float_range_of_an_integer_argument_is_refused_but_a_batch_fraction_is_not():
    from hpctune.errors import SpecError
    from hpctune.yolo.space import validate_space

    for key in ("batch", "imgsz", "close_mosaic"):
        with pytest.raises(SpecError, match=f"'{key}' is a whole number: use randint"):
            validate_space({key: {"uniform": [1, 64]}})
    assert validate_space({"batch": {"uniform": [0.5, 0.9]}}) == {"batch": {"uniform": [0.5, 0.9]}}
    assert validate_space({"batch": {"randint": [8, 65]}}) == {"batch": {"randint": [8, 65]}}
