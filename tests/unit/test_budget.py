"""The time budget (--time-budget): new trials start only while one can still reach the first rung."""

from __future__ import annotations

from ray.tune.search import Searcher

from hpctune.engine.budget import TimeBudget
from hpctune.engine.journal import Journaled
from hpctune.engine.searchers import make_searcher


def test_a_new_trial_starts_only_if_it_can_reach_the_first_rung():
    budget = TimeBudget(100.0, grace_period=3, start=0.0)
    assert budget.allows_new_trial(now=99.0)  # nothing learnt yet: until the end
    for seconds in (10.0, 10.0, 0.01):  # the last one: a report replayed from a record, not an epoch
        budget.observe({"time_this_iter_s": seconds})
    assert budget.allows_new_trial(now=70.0)  # 70 + 3 x 10 <= 100
    assert not budget.allows_new_trial(now=71.0)


def test_the_final_training_time_is_kept_free():
    budget = TimeBudget(100.0, grace_period=3, final_epochs=4, start=0.0)
    budget.observe({"time_this_iter_s": 10.0})
    assert budget.allows_new_trial(now=30.0) and not budget.allows_new_trial(now=31.0)  # 3 + 4 epochs of 10 s


def test_the_searcher_finishes_when_the_budget_is_spent(tmp_path):
    searcher = make_searcher("random", space={"lr0": {"loguniform": [1e-4, 1e-2]}}, metric="m", max_epochs=9,
                             seed=0, baseline=None)
    journal = Journaled(searcher, tmp_path / "suggestions.jsonl", None)
    journal.budget = TimeBudget(-1.0, grace_period=1)  # already over
    assert journal.suggest(journal.next_trial_id()) is Searcher.FINISHED
    assert journal.count == 0 and not (tmp_path / "suggestions.jsonl").exists()


def test_near_the_jobs_end_the_searcher_pauses_rather_than_finishes(tmp_path):
    """The job's time limit (under SLURM) holds new trials back without ending the search: the next job goes on."""
    searcher = make_searcher("random", space={"lr0": {"loguniform": [1e-4, 1e-2]}}, metric="m", max_epochs=9,
                             seed=0, baseline=None)
    journal = Journaled(searcher, tmp_path / "suggestions.jsonl", None)
    journal.job_end = TimeBudget(5.0, grace_period=1)
    journal.on_trial_result("t", {"time_this_iter_s": 10.0})  # an epoch takes longer than the time left
    assert journal.suggest(journal.next_trial_id()) is None
    assert journal.count == 0 and not (tmp_path / "suggestions.jsonl").exists()
    journal.job_end = None  # the next job: a fresh limit
    assert journal.suggest(journal.next_trial_id()) is not None and journal.count == 1
