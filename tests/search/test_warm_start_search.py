"""`--warm-start RUN_DIR` through the real driver, real Ray and the real TPE searcher (simulated trials):
the new search's searcher holds the old run's trials before its first suggestion, keeps them across a
resume, runs its own baseline first, and the old run is left as it was."""

from __future__ import annotations

import json

from test_grow import _create, _files, _journal, _searcher_state

from hpctune import api
from hpctune.run.warmstart import prior_trials


def test_a_warm_started_search_learns_the_earlier_run_first(shared_tmp):
    old = _create(shared_tmp, "warm-old", trials=5)
    api.resume(old.path)
    old_files = _files(old)
    priors = prior_trials(old.path, json.loads(old.manifest.read_text())["spec"]["metric"])
    assert len(priors) == 5

    new = _create(shared_tmp, "warm-new", trials=3)
    manifest = json.loads(new.manifest.read_text())
    manifest["spec"]["warm_start"] = str(old.path)  # what build_spec records for --warm-start
    new.write_manifest(manifest)
    result = api.resume(new.path)
    assert result.finished and len(result.table) == 3

    state = _searcher_state(new)
    learned = [t for t in state["trials"].values() if t.get("prior")]
    assert [t["config"] for t in learned] == [p["config"] for p in priors]
    assert len(state["trials"]) == 5 + 3 and len(state["numbers"]) == 5 + 3  # Optuna holds all eight
    journal = _journal(new)
    assert len(journal) == 3
    assert _files(old) == old_files, "the earlier run was changed"
