"""The searched lr0 range under optimizer=auto (hpctune.yolo.optimizer.lr0_range)."""

import pytest

from hpctune.yolo.optimizer import lr0_range


@pytest.mark.parametrize(("fitted", "low", "high"), [
    (0.001, 0.001 / 3, 0.01),  # AdamW, 6 classes
    (0.000119, 0.000119 / 3, 0.01),  # AdamW, 80 classes: the documented 0.01 stays inside
    (0.01, 0.01 / 3, 0.01),  # MuSGD: both rates are 0.01
])
def test_the_range_holds_both_the_fitted_and_the_documented_rate(fitted, low, high):
    (lo, hi), = lr0_range(fitted, 0.01).values()
    assert lo == pytest.approx(low) and hi == pytest.approx(high)
    assert lo < fitted <= hi and lo < 0.01 <= hi


def _spec(data, tmp_path, **kwargs):
    from hpctune.run.spec import Resources
    from hpctune.yolo.arguments import build_spec

    kwargs = {"max_samples": 8, **kwargs}
    return build_spec(data=str(data), epochs=10, grace_period=3, storage=str(tmp_path), name="x",
                      resources=Resources(cpus=2, gpus=0), **kwargs)


def test_auto_resolved_to_adamw_searches_warmup_bias_lr_from_autos_zero_to_the_documented_value(tiny_data, tmp_path):
    spec = _spec(tiny_data, tmp_path)
    assert spec.train_args["optimizer"] == "AdamW" and "warmup_bias_lr" not in spec.train_args
    assert spec.space["warmup_bias_lr"] == {"uniform": [0.0, 0.1]}
    assert spec.baseline["warmup_bias_lr"] == 0.0  # the untuned run, as auto trains it
    assert spec.starts[0]["warmup_bias_lr"] == 0.1 and spec.starts[0]["lr0"] == 0.01  # where Ultralytics' tuners start


def test_a_warmup_bias_lr_or_optimizer_the_user_gave_is_kept(tiny_data, tmp_path):
    fixed = _spec(tiny_data, tmp_path, train_args={"warmup_bias_lr": 0.05})
    assert "warmup_bias_lr" not in fixed.space and fixed.train_args["warmup_bias_lr"] == 0.05
    sgd = _spec(tiny_data, tmp_path, train_args={"optimizer": "SGD"})
    assert "warmup_bias_lr" not in sgd.space
