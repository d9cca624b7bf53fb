"""`hpctune report` and `hpctune list` on a real search: finished, still running, and not started.

The HTML page is opened in headless Chromium (Debian's chromium, installed by
scripts/setup-test-system.sh): a screenshot is taken and the page's own script reports, in the
dumped DOM, whether every plot image loaded.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import run_cli
from finished_search import TRIALS, finished_search

from hpctune.report.importance import MIN_TRIALS

PLOT_FILES = ["metric_vs_epoch.png", "survivors_per_rung.png", "hyperparameters.png", "importance.png"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def search():
    return finished_search()


def chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("chromium is not installed: run scripts/setup-test-system.sh as root")
    profile.mkdir(parents=True, exist_ok=True)
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--hide-scrollbars", *args, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def loaded_images(dom: str) -> tuple[list[dict[str, str]], dict[str, str]]:
    """The <img> tags' attributes and the #image-check summary the page's script wrote."""
    images = [dict(re.findall(r'([\w-]+)="([^"]*)"', tag)) for tag in re.findall(r"<img\b[^>]*>", dom)]
    check = re.search(r'<p id="image-check"[^>]*>', dom)
    return images, dict(re.findall(r'([\w-]+)="([^"]*)"', check.group(0))) if check else {}


def check_in_chromium(page: Path, work: Path, expected_images: int) -> Path:
    dom = chromium(page, work / "profile-dom", "--virtual-time-budget=10000", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    images, check = loaded_images(dom.stdout)
    assert len(images) == expected_images, dom.stdout[:2000]
    for image in images:
        assert image.get("data-loaded") == "yes", f"{image.get('data-file')} did not load"
        assert int(image.get("data-natural-width", "0")) > 100, image.get("data-file")
        assert image["src"].startswith("data:image/png;base64,"), "the page must be self-contained"
    assert check.get("data-loaded") == check.get("data-total") == str(expected_images), check
    shot = work / "screenshot.png"
    result = chromium(page, work / "profile-shot", f"--screenshot={shot}", "--window-size=1280,3200")
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    assert shot.read_bytes().startswith(PNG_MAGIC)
    return shot


def test_report_of_finished_search_in_chromium(search, tmp_path):
    result = run_cli("report", str(search.run_dir), "--top-k", "3", timeout=180)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("hpctune: run search is finished; trials: ")
    assert re.match(r"best trial \w+_\d{5}: metrics/mAP50-95\(B\) = \d\.\d{5} after \d epochs?", lines[1])
    page = search.run_dir / "report" / "index.html"
    assert lines[2] == f"report: {page}  (4 plots beside it)"
    for name in PLOT_FILES:
        assert (page.parent / name).read_bytes().startswith(PNG_MAGIC), name
    text = page.read_text()
    assert not re.search(r"""(src|href)=['"](?!data:)""", text), "no external resources"
    assert "Top 3 trials" in text and "Best configuration" in text and "best_hyperparameters.yaml" in text
    assert text.count("<tr><td>") >= 3
    # 4 trials cannot tell which hyperparameter mattered: the report says so instead of ranking noise
    assert re.search(rf"too few trials to tell \([0-4] of {MIN_TRIALS} needed\)", text)
    shot = check_in_chromium(page, tmp_path, expected_images=4)
    assert shot.stat().st_size > 50_000  # a page with four plots, not a blank one
    shutil.copyfile(shot, search.run_dir.parent.parent / "report-screenshot.png")  # to look at by hand


def test_report_while_search_runs(search, tmp_path):
    result = search.report_while_running
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("hpctune: run search is running; trials: "), result.stdout
    page = search.report_while_running_dir / "index.html"
    text = page.read_text()
    assert "<span class='state running'>running</span>" in text
    assert "run <code>hpctune report</code> again" in text
    check_in_chromium(page, tmp_path, expected_images=4)


def test_list_shows_running_and_finished_runs(search):
    during = search.list_while_running
    assert during.returncode == 0, during.stderr
    header, row = during.stdout.strip().splitlines()
    assert header.split() == ["NAME", "STATE", "TRIALS", "BEST", "METRIC", "CREATED", "LAST", "RESULT"]
    assert row.split()[:2] == ["search", "running"]
    after = run_cli("list", str(search.storage))
    assert after.returncode == 0, after.stderr
    fields = after.stdout.strip().splitlines()[1].split()
    assert fields[:5] == ["search", "finished", f"{TRIALS}/{TRIALS}", "done", fields[4]]
    assert re.fullmatch(r"\d\.\d{5}", fields[4]) and fields[5] == "metrics/mAP50-95(B)"


def test_report_and_list_of_a_run_not_started(shared_tmp, tiny_data, tmp_path):
    from hpctune.api import create_run
    from hpctune.run.spec import Resources
    from hpctune.yolo.arguments import build_spec

    spec = build_spec(data=str(tiny_data), epochs=2, grace_period=1, max_samples=3, storage=str(shared_tmp),
                      name="fresh", resources=Resources(cpus=2, gpus=0))
    run_dir = create_run(spec).path
    result = run_cli("report", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("hpctune: run fresh is new; trials: 3 pending")
    check_in_chromium(run_dir / "report" / "index.html", tmp_path, expected_images=4)
    listing = run_cli("list", str(shared_tmp))
    assert listing.stdout.splitlines()[1].split()[:4] == ["fresh", "new", "0/3", "done"]


def test_user_errors_are_one_line(shared_tmp):
    for args, words in [
        (["report", str(shared_tmp / "missing")], "does not exist"),
        (["report", str(shared_tmp)], "is not an hpctune run"),
        (["list", str(shared_tmp / "missing")], "storage folder"),
    ]:
        result = run_cli(*args)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("hpctune: error: "), result.stderr
        assert words in result.stderr
    empty = run_cli("list", str(shared_tmp))
    assert empty.returncode == 0 and empty.stdout.startswith("no hpctune runs in ")
