"""key=value parsing as `yolo` users type it: pure logic."""

import pytest

from hpctune.cli.options import parse_key_values, spec_arguments
from hpctune.errors import SpecError


def test_values_are_typed():
    assert parse_key_values(("epochs=30", "lr0=0.01", "optimizer=SGD", "cos_lr=True", "model=yolov8n.yaml")) == {
        "epochs": 30, "lr0": 0.01, "optimizer": "SGD", "cos_lr": True, "model": "yolov8n.yaml",
    }


def test_model_and_data_come_from_key_values_or_options():
    args = spec_arguments(("model=a.yaml", "data=d.yaml", "epochs=3"), model=None, data=None, seed=1)
    assert args["model"] == "a.yaml" and args["data"] == "d.yaml" and args["train_args"] == {"epochs": 3}
    assert spec_arguments((), model=None, data="x.yaml")["model"] == "yolov8n.yaml"


def test_not_key_value_is_an_error():
    with pytest.raises(SpecError, match="'epochs30' is not key=value"):
        parse_key_values(("epochs30",))
