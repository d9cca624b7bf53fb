"""A fixed trial count against a time budget, on the same allocation: how much of the allocation
the search keeps busy, and the best it finds in the same GPU-hours.

Both runs are simulated searches (hpctune.testing.simulate: stand-in trials that sleep through
their epochs and report a seeded learning curve) on `--slots` fake GPUs of this machine, through
the real driver, ASHA and searcher. The allocation is the budget: `--budget-s` seconds of every
slot. `fixed` runs `--trials` trials and ends when ASHA has drained them (the allocation idles
after that); `budget` runs with `--time-budget` and no trial count. Utilisation = busy slot-seconds
(the epochs' sleeps) / (slots x the allocation's seconds).

    .venv/bin/python scripts/bench_time_budget.py [--slots 8] [--budget-s 240] [--trials 40]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hpctune.api import create_run  # noqa: E402
from hpctune.engine import driver  # noqa: E402
from hpctune.testing import simulate  # noqa: E402

METRIC = simulate.METRIC


def run(name: str, storage: Path, args, budget_s: float, trials: int) -> dict:
    spec = simulate.make_spec(name=name, storage=storage, trials=trials, epochs=args.epochs, grace_period=3,
                              seed=args.seed, epoch_s=args.epoch_s, gpus_per_node=args.slots)
    spec.time_budget_s = budget_s
    spec.search_alg = args.search
    rundir = create_run(spec)
    start = time.time()
    result = driver.run(rundir.path)
    busy, best = 0.0, 0.0
    end_of_allocation = start + args.budget_s
    for records in rundir.trials.glob("*/epochs.jsonl"):
        for line in records.read_text().splitlines():
            record = json.loads(line)
            if "busy" not in record:
                continue
            a, b = record["busy"]
            busy += max(0.0, min(b, end_of_allocation) - a)
            if b <= end_of_allocation and record["metrics"].get(METRIC) is not None:
                best = max(best, record["metrics"][METRIC])
    return {"name": name, "trials": len(result.table), "wall_s": time.time() - start,
            "utilisation": busy / (args.slots * args.budget_s), "best": best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--budget-s", type=float, default=240.0)
    parser.add_argument("--trials", type=int, default=40, help="the fixed run's trial count")
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--epoch-s", type=float, default=2.0)
    parser.add_argument("--search", default="random")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    storage = Path(tempfile.mkdtemp(prefix="hpctune-budget-", dir=Path.cwd()))
    try:
        rows = [run("fixed", storage, args, 0.0, args.trials),
                run("budget", storage, args, args.budget_s, 100_000)]
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    print(f"{args.slots} slots x {args.budget_s:.0f} s allocation; epochs of ~{args.epoch_s} s, max {args.epochs}, "
          f"ASHA grace 3 rf 3; {args.search} search")
    for row in rows:
        print(f"  {row['name']:7s} {row['trials']:4d} trials  wall {row['wall_s']:6.1f} s  "
              f"allocation busy {100 * row['utilisation']:5.1f} %  best {row['best']:.4f}")


if __name__ == "__main__":
    main()
