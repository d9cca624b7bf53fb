"""A trial's output (Python, C and child processes) and its failure land in its own folder."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hpctune.engine.trial import output_to


def test_output_and_the_failure_are_kept_in_the_trial_folder(tmp_path, capsys):
    log = tmp_path / "trial" / "output.log"
    with capsys.disabled(), pytest.raises(RuntimeError), output_to(log):  # the real streams, as in a worker
        print("from python", flush=True)
        os.write(2, b"from the fd\n")
        subprocess.run([sys.executable, "-c", "print('from a child')"], check=True)
        raise RuntimeError("the reason it failed")
    text = log.read_text()
    for words in ("from python", "from the fd", "from a child", "RuntimeError: the reason it failed"):
        assert words in text, text
    print("after")  # the streams are back
    assert "after" not in log.read_text() and "after" in capsys.readouterr().out
