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
