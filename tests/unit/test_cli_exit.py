"""What `hpctune tune`/`resume`/`train` print and exit with once a search returns (hpctune.cli.search)."""

from pathlib import Path

import pytest

from hpctune.cli.search import INCOMPLETE_EXIT, _print_result
from hpctune.run.results import SearchResult


def _result(tmp_path: Path, finished: bool) -> SearchResult:
    row = {"trial_id": "t1", "state": "completed" if finished else "running", "metric": 0.3, "epochs": 3}
    return SearchResult(run_dir=tmp_path, best_trial="t1", best_config={"lr0": 0.01}, best_metric=0.3,
                        best_weights=None, metric="metrics/mAP50-95(B)", table=[row], finished=finished)


def test_a_finished_search_returns_normally(tmp_path, capsys):
    _print_result(_result(tmp_path, finished=True))
    assert "search finished; 1 trials" in capsys.readouterr().out


def test_an_unfinished_search_exits_non_zero_with_the_resume_command(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        _print_result(_result(tmp_path, finished=False))
    assert stop.value.code == INCOMPLETE_EXIT != 0
    err = capsys.readouterr().err
    assert f"hpctune resume {tmp_path}" in err and "it wrote no log" in err  # no hpctune.log: not pointed at
    (tmp_path / "hpctune.log").write_text("x")
    with pytest.raises(SystemExit):
        _print_result(_result(tmp_path, finished=False))
    assert f"its log: {tmp_path / 'hpctune.log'}" in capsys.readouterr().err
