"""W&B offline runs, `hpctune sync`, TensorBoard event files and the results table, from a real search
with real wandb and no network (as on a compute node)."""

from __future__ import annotations

import csv
import json
import os
import socket
import struct
import subprocess
import sys
import time

import pytest
from conftest import REPO, run_cli
from finished_search import FAKE_KEY, TRIALS, closed_port, finished_search

from hpctune.engine import tracking

METRIC = "metrics/mAP50-95(B)"


@pytest.fixture(scope="module")
def search():
    return finished_search()


def read_wandb_records(path):
    """The records of a .wandb file (W&B's LevelDB-style log: 32 KiB blocks of chunked records)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    pos, block, chunks, records = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block tail too short for a header: padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            break
        chunks = chunk if kind in (1, 2) else chunks + chunk
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(chunks))
    return records


def offline_run(folder):
    """config, history rows (by step) and run settings of one offline W&B run."""
    records = read_wandb_records(next(folder.glob("run-*.wandb")))
    config, history, run = {}, {}, None
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            config.update(_config(record.run.config))
        elif kind == "config":
            config.update(_config(record.config))
        elif kind == "history":
            row = {(item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in record.history.item}
            history[int(row.get("_step", record.history.step.num))] = row
    return config, history, run


def _config(record):
    values = {item.key: json.loads(item.value_json) for item in record.update}
    return {k: v["value"] if isinstance(v, dict) and "value" in v else v for k, v in values.items()}


def rows(search):
    with open(search.run_dir / "results.csv") as f:
        return list(csv.DictReader(f))


def reported(search, trial_id):
    """The results the driver received from a trial, in order (Ray's own result log)."""
    lines = (search.run_dir / "tune" / trial_id / "result.json").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_one_offline_wandb_run_per_trial_with_config_and_metrics(search):
    folders = tracking.offline_runs(search.run_dir)
    table = rows(search)
    assert len(table) == TRIALS
    assert sorted(f.name.rsplit("-", 1)[-1] for f in folders) == sorted(r["trial_id"] for r in table)
    for row in table:
        trial_id = row["trial_id"]
        folder = next(f for f in folders if f.name.endswith(trial_id))
        config, history, run = offline_run(folder)
        assert run.run_group == "search" and run.project == "hpctune-tests" and run.display_name == trial_id
        assert config["lr0"] == pytest.approx(float(row["config/lr0"]))
        assert config["momentum"] == pytest.approx(float(row["config/momentum"]))
        assert config["hpctune/trial_id"] == trial_id and config["hpctune/epochs"] == 3
        results = reported(search, trial_id)
        assert sorted(history) == [r["epoch"] for r in results], "one history row per epoch, step = epoch"
        for result in results:
            assert history[result["epoch"]][METRIC] == pytest.approx(result[METRIC], abs=1e-6)
            assert history[result["epoch"]]["epoch"] == result["epoch"]


def test_api_key_never_written(search):
    assert FAKE_KEY not in search.tune.stdout + search.tune.stderr
    for path in search.run_dir.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert FAKE_KEY.encode() not in path.read_bytes(), f"API key written to {path}"


def read_tensorboard(path):
    from tensorboardX.proto import event_pb2

    data, pos, scalars = path.read_bytes(), 0, {}
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
        pos += 12 + length + 4
        for value in event.summary.value:
            scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def test_tensorboard_events_and_results_table_per_trial(search):
    for row in rows(search):
        files = list((search.run_dir / "tensorboard" / row["trial_id"]).glob("events.out.tfevents.*"))
        assert len(files) == 1
        scalars = read_tensorboard(files[0])
        series = scalars["metrics/mAP50-95_B_"]  # TensorBoard's spelling of metrics/mAP50-95(B)
        results = reported(search, row["trial_id"])
        assert series == pytest.approx({r["epoch"]: r[METRIC] for r in results}, abs=1e-5)
        assert row["state"] in {"completed", "stopped"}


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_sync_tries_the_upload_and_reports_the_network_failure(search):
    env = {"WANDB_API_KEY": FAKE_KEY, "WANDB_BASE_URL": f"http://127.0.0.1:{closed_port()}"}
    before = {f.name: snapshot(f) for f in tracking.offline_runs(search.run_dir)}
    started = time.monotonic()
    result = run_cli("sync", str(search.run_dir), timeout=300, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert time.monotonic() - started < 120
    out = result.stdout.splitlines()
    assert out[0].startswith(f"uploading {TRIALS} offline W&B run(s) of search to http://127.0.0.1:")
    assert sum(line.startswith("not uploaded") for line in out) == TRIALS
    error = result.stderr.strip().splitlines()
    assert len(error) == 1
    assert error[0].startswith(f"hpctune: error: {TRIALS} of {TRIALS} offline W&B runs not uploaded")
    assert "connection refused" in error[0]  # wandb's own failure: the upload was really attempted
    assert "cannot be reached from" in error[0] and "nothing was deleted" in error[0]
    assert FAKE_KEY not in result.stdout + result.stderr
    after = {f.name: snapshot(f) for f in tracking.offline_runs(search.run_dir)}
    assert after.keys() == before.keys()
    for name, files in before.items():
        assert {k: after[name].get(k) for k in files} == files, f"{name} changed or lost files"


def test_sync_of_a_run_without_wandb(shared_tmp, tiny_data):
    from hpctune.api import create_run
    from hpctune.run.spec import Resources
    from hpctune.yolo.arguments import build_spec

    spec = build_spec(data=str(tiny_data), epochs=2, grace_period=1, max_samples=2, storage=str(shared_tmp),
                      name="plain", resources=Resources(cpus=2, gpus=0))
    run_dir = create_run(spec).path
    result = run_cli("sync", str(run_dir))
    assert result.returncode == 2
    assert result.stderr.startswith("hpctune: error: ") and "has no offline W&B runs" in result.stderr
    missing = run_cli("sync", str(shared_tmp / "nope"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_auto_mode_is_offline_where_the_server_cannot_be_reached(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    started = time.monotonic()
    assert tracking.resolve_mode("auto", tmp_path) == "offline"
    assert time.monotonic() - started < 5
    assert tracking.resolve_mode("offline", tmp_path) == "offline"
    with socket.socket() as server:  # a server that answers: reachable
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert tracking.reachable(f"http://127.0.0.1:{server.getsockname()[1]}")


def test_wandb_run_ids_are_valid_and_unique():
    assert tracking.wandb_run_id("my search.v2", "ab12c_00003") == "my-search-v2-ab12c_00003"
    long_a = tracking.wandb_run_id("x" * 80, "ab12c_00003")
    long_b = tracking.wandb_run_id("x" * 79 + "y", "ab12c_00003")
    assert len(long_a) <= 64 and long_a.endswith("ab12c_00003") and long_a != long_b


ONLINE_FAILS = '''
import http.server, json, os, sys, threading
from pathlib import Path

class Down(http.server.BaseHTTPRequestHandler):  # a W&B server that answers, but only with errors
    def do_POST(self):
        self.send_response(500)
        self.end_headers()
    do_GET = do_POST
    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Down)
threading.Thread(target=server.serve_forever, daemon=True).start()
os.environ["WANDB_BASE_URL"] = f"http://127.0.0.1:{server.server_address[1]}"
import wandb
from hpctune.engine import tracking

folder = Path(sys.argv[1])
mode = tracking.resolve_mode("auto", folder)
feeder = tracking._RunFeeder({
    "project": "p", "entity": None, "group": "g", "name": "t_00000", "id": "search-t_00000", "job_type": "trial",
    "resume": "allow", "dir": str(folder), "mode": mode, "reinit": "create_new", "config": {"lr0": 0.1},
    "settings": wandb.Settings(silent=True, console="off", x_disable_stats=True, save_code=False, disable_git=True)})
feeder.start()
feeder.queue.put(("log", ({"metrics/mAP50-95(B)": 0.5, "epoch": 1}, 1)))
feeder.queue.put(("end", "completed"))
feeder.queue.put(tracking._END)
feeder.join(120)
print(json.dumps({"mode": mode, "alive": feeder.is_alive()}))
'''


def test_a_failed_online_start_keeps_the_run_offline(tmp_path):
    """auto mode goes online where the server answers and a key exists; when the run cannot start
    there after all, its data is written offline instead of being lost."""
    env = {**os.environ, "WANDB_API_KEY": FAKE_KEY, "WANDB__GRAPHQL_RETRY_MAX": "1", "WANDB_INIT_TIMEOUT": "30"}
    result = subprocess.run([sys.executable, "-c", ONLINE_FAILS, str(tmp_path)], capture_output=True, text=True,
                            timeout=180, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"mode": "online", "alive": False}
    assert "writing it offline instead" in result.stderr
    (folder,) = tracking.offline_runs(tmp_path)
    _, history, _ = offline_run(folder)
    assert history[1]["metrics/mAP50-95(B)"] == 0.5
    assert FAKE_KEY not in result.stdout + result.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert FAKE_KEY.encode() not in path.read_bytes(), path
