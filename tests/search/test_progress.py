"""Live progress: plain lines in a job log (from a real search whose stdout is a file, as under
SLURM), a rich table on a real pseudo-terminal, and the estimates behind both."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO
from finished_search import TRIALS, finished_search

from hpctune.engine import progress

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]")  # anything but \t and \n
STAMP = r"\[(\d\d):(\d\d)\] "


@pytest.fixture(scope="module")
def search():
    return finished_search()


def test_job_log_has_plain_lines_one_per_update(search):
    out = search.tune.stdout
    assert not CONTROL.search(out), "control characters in the job log"
    assert not CONTROL.search(search.tune.stderr)
    lines = out.splitlines()
    progress_lines = [line for line in lines if re.match(STAMP, line)]
    assert progress_lines[0].startswith("[00:00] search search: 4 trials of up to 3 epochs; ASHA keeps 1/2 at epochs")
    assert not any("Trial status" in line or "╭" in line for line in lines), "Ray's own output is off"

    reported = {}  # trial -> the epochs the driver received (Ray's own result log)
    for path in search.run_dir.glob("tune/*/result.json"):
        reported[path.parent.name] = [json.loads(line)["epoch"] for line in path.read_text().splitlines()]
    assert len(reported) == TRIALS
    for trial_id, epochs in reported.items():
        started = [x for x in progress_lines if re.search(rf"trial {trial_id} started: lr0=\S+ momentum=\S+$", x)]
        results = [x for x in progress_lines
                   if re.search(rf"trial {trial_id} epoch \d/3: mAP50-95\(B\) \d\.\d{{4}} \(\d+\.\d s\) "
                                rf"\| (lr0|momentum)=\S+ (lr0|momentum)=\S+$", x)]
        ended = [x for x in progress_lines if re.search(
            rf"trial {trial_id} (completed 3 epochs|stopped by ASHA after epoch \d): mAP50-95\(B\) \d\.\d{{4}}$", x)]
        assert len(started) == 1 and len(ended) == 1, (trial_id, progress_lines)
        assert len(results) == len(epochs), "one line per reported epoch"

    status = [x for x in progress_lines if " | best " in x]
    pattern = (STAMP + r"trials (\d) done/(\d) running/(\d) pending( \(\d stopped by ASHA\))? \| best "
               r"(-|\d\.\d{4} \(trial \w+_\d{5}, epoch \d\)( vs baseline \d\.\d{4}, [+-]\d\.\d{4})?) "
               r"\| (eta ~(\d\d:\d\d|\?)|all done)$")
    for line in status:
        assert re.match(pattern, line), line
    assert " vs baseline " in status[-1], "the best is shown beside the baseline (the untuned first trial)"
    final = re.match(pattern, status[-1])
    assert final.group(3, 4, 5) == (str(TRIALS), "0", "0") and status[-1].endswith("all done")
    seconds = [int(m) * 60 + int(s) for m, s in (re.match(STAMP, x).groups() for x in status[:-1])]
    assert all(b - a >= 4 for a, b in zip(seconds, seconds[1:], strict=False)), "status lines at most every 5 s"


def test_rich_table_on_a_terminal():
    """The display the callback picks for a real terminal: a live rich table (escape codes expected)."""
    script = textwrap.dedent("""
        import sys
        from hpctune.engine import progress
        assert progress.choose_mode(sys.stdout) == "rich"
        board = progress.Board(metric="metrics/mAP50-95(B)", epochs=3, grace_period=1, reduction_factor=2,
                               total=3, keys=["lr0"])
        display = progress.RichDisplay(board, sys.stdout)
        board.started("a_00000", {"lr0": 0.01})
        board.started("a_00001", {"lr0": 0.1})
        board.result("a_00000", {"epoch": 1, "metrics/mAP50-95(B)": 0.25, "time_this_iter_s": 2.0})
        display.say("trial a_00000 started: lr0=0.01")
        board.ended("a_00001", error="boom")
        display.refresh(force=True)
        display.close()
    """)
    parent, child = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "LINES": "30", "TERM": "xterm-256color"}
    env.pop("HPCTUNE_PROGRESS", None)
    process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdin=child, stdout=child, stderr=child,
                               env=env)
    os.close(child)
    output = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(parent, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.close(parent)
    assert process.wait(timeout=30) == 0, output.decode(errors="replace")
    text = output.decode(errors="replace")
    assert "\x1b[" in text, "a terminal gets rich's escape codes"
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    for words in ("a_00000", "running", "0.2500", "a_00001", "error", "mAP50-95(B)", "lr0", "trial a_00000 started"):
        assert words in plain, words


def test_plain_mode_off_a_terminal_and_override(monkeypatch):
    monkeypatch.delenv("HPCTUNE_PROGRESS", raising=False)
    assert progress.choose_mode(io.StringIO()) == "plain"
    monkeypatch.setenv("HPCTUNE_PROGRESS", "off")
    assert progress.choose_mode(io.StringIO()) == "off"


def test_status_lines_are_throttled():
    board = progress.Board(metric="m", epochs=4, grace_period=1, reduction_factor=2, total=2, keys=[])
    stream = io.StringIO()
    display = progress.PlainDisplay(board, stream, interval_s=3600)
    board.started("t_00000", {})
    for epoch in range(1, 4):
        board.result("t_00000", {"epoch": epoch, "m": epoch / 10, "time_this_iter_s": 1.0})
        display.status()
    assert len(stream.getvalue().splitlines()) == 1, "one status line per interval"
    display.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "best 0.3000 (trial t_00000, epoch 3)" in lines[1]


def test_rung_milestones_match_rays_asha():
    from ray.tune.schedulers import ASHAScheduler

    for epochs, grace, factor in [(3, 1, 2), (3, 1, 3), (100, 10, 3), (9, 1, 3), (30, 5, 2), (8, 8, 3)]:
        scheduler = ASHAScheduler(time_attr="epoch", metric="m", mode="max", max_t=epochs, grace_period=grace,
                                  reduction_factor=factor)
        rays = sorted({int(m) for m, _ in scheduler._brackets[0]._rungs} - {epochs})
        assert progress.rung_milestones(epochs, grace, factor) == rays, (epochs, grace, factor)


def test_eta_counts_the_epochs_asha_will_still_run():
    assert progress.expected_epochs_left(0, 9, [1, 3], 3) == pytest.approx(1 + 2 / 3 + 6 / 9)
    assert progress.expected_epochs_left(3, 9, [1, 3], 3) == pytest.approx(6)
    board = progress.Board(metric="m", epochs=9, grace_period=1, reduction_factor=3, total=4, keys=[])
    assert board.eta() is None
    board.started("t_00000", {})
    board.result("t_00000", {"epoch": 3, "m": 0.1, "time_this_iter_s": 10.0})
    # running: 6 epochs left; 3 pending x (1 + 2/3 + 6/9) epochs; one trial at a time; 10 s per epoch
    assert board.eta() == pytest.approx((6 + 3 * (1 + 2 / 3 + 6 / 9)) * 10)


def test_differing_keys_prefer_wide_spreads():
    space = {"lr0": {"loguniform": [1e-5, 1e-1]}, "momentum": {"uniform": [0.6, 0.98]},
             "optimizer": {"choice": ["SGD", "Adam"]}, "imgsz": 64}
    configs = [{"lr0": 1e-5, "momentum": 0.80, "optimizer": "SGD"},
               {"lr0": 1e-1, "momentum": 0.81, "optimizer": "SGD"}]
    assert progress.differing_keys(space, configs, 2) == ["lr0", "momentum"]
    assert progress.one_line("a\x1b[2Kb\r\nc") == "a?[2Kb c"


def test_a_time_budget_search_shows_no_pending_count_and_an_eta_within_the_budget():
    """--time-budget without a trial count: new trials start until the budget ends, so no number of pending
    trials exists; the estimate is the budget's end (or the running trials' end, if later)."""
    from hpctune.run.spec import UNLIMITED_TRIALS

    board = progress.Board(metric="m", epochs=9, grace_period=1, reduction_factor=3, total=UNLIMITED_TRIALS,
                           keys=[], start=0.0, budget_s=600.0)
    board.started("a", {})
    board.result("a", {"epoch": 1, "m": 0.1, "time_this_iter_s": 10.0})
    line = board.status_line(now=100.0)
    assert "pending" not in line and "trials 0 done/1 running" in line, line
    assert board.eta(now=100.0) == pytest.approx(500.0)  # the budget left, not 100 000 trials' worth
    assert board.eta(now=590.0) == pytest.approx(40.0)  # then the running trial's expected epochs left (ASHA)
    capped = progress.Board(metric="m", epochs=9, grace_period=1, reduction_factor=3, total=4, keys=[],
                            start=0.0, budget_s=600.0)
    assert "0 running/4 pending" in capped.status_line(now=1.0)  # a cap with the budget: counted
