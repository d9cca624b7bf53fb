"""A secure Ray cluster on the nodes of a SLURM allocation, one task per node.

    alloc = Allocation.from_env()
    with ray_cluster(alloc, shared_dir) as cluster:
        if cluster.is_head:
            run_search(cluster.address)      # ray.init(address=cluster.address) works here

Rank 0 starts the Ray head, ranks > 0 start Ray workers that join it; ``ray_cluster`` returns
on rank 0 once every node has joined, and on ranks > 0 only after the head is gone (their
body then does nothing). Knows nothing of YOLO or of the search.

How the nodes meet: through a folder on shared storage, ``shared_dir/ray-<job>.<step>.r<restart>``:
``token`` (a fresh random token, 0600), ``head.json`` (the head's address and a per-run nonce,
0600), ``shutdown`` (the nonce, written by the head when it stops) and one ``ray start`` log per
node. Each worker starts its ``ray start`` at once, gated: it imports Ray while the head
starts and joins the moment ``head.json`` says ``ready`` (no sleeps).

Security: token authentication is always on (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN_PATH``)
for every Ray process and, on rank 0, for this process while the body runs; the token is
never printed or logged. Each node binds its own IP (its SLURM host name, resolved by the
system resolver), a private node-local temp dir (0700, a random name under ``$TMPDIR`` or /tmp),
and ports from ``hpctune.raycluster.node``.

Teardown on every exit path of the ``with`` block (return, exception, SIGTERM/SIGUSR2/SIGHUP
when nobody else handles them, SIGTERM after ``ray.init()`` too): this node's Ray processes
only, then its temp dir. Workers leave when the head writes ``shutdown`` or stops answering.
A job SIGKILLed before its teardown leaves only its temp dir; the next bring-up on that node
removes it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hpctune.errors import ClusterError
from hpctune.ray_compat import alive_node_ips, refresh_cached_env
from hpctune.raycluster.driver_env import disconnect_driver, environ, exit_on_signals
from hpctune.raycluster.node import (
    TEMP_PREFIX,
    TEMP_RANDOM,
    RayNodeProcess,
    private_temp_dir,
    read_json,
    read_text,
    sweep_stale_temp_dirs,
    write_private,
)
from hpctune.raycluster.ports import candidate_plans, check_local_ip, client_server_available, resolve_ip, tcp_open
from hpctune.slurm.allocation import Allocation

log = logging.getLogger(__name__)

__all__ = ["ClusterHandle", "ray_cluster"]

_SOCKET_TAIL = 64  # len("/session_2026-11-28_17-41-19_926648_4922/sockets/plasma_store") + slack
_HEAD_LOST_PROBES = 3  # consecutive failed connects to the head's port before a worker leaves


@dataclass(frozen=True)
class ClusterHandle:
    """What the body of ``ray_cluster`` gets."""

    is_head: bool
    address: str  # "ip:port" of the head's GCS
    node_ip: str  # this node's IP in the cluster
    num_nodes: int
    run_dir: Path  # shared folder of this bring-up: token, head.json, ray start logs
    driver_env: Mapping[str, str] = field(default_factory=dict)  # env a driver needs (set on rank 0)
    joined_s: float | None = None  # seconds from ray_cluster() to all nodes joined (rank 0)
    head_alive: Callable[[], bool] = lambda: True  # rank 0: False once this node's `ray start` ended


def _socket_room(root: Path, prefix: str) -> bool:
    """Whether Ray's unix socket paths in a temp dir made in `root` stay within 107 bytes."""
    return len(str(root / prefix)) + TEMP_RANDOM + _SOCKET_TAIL <= 107


def _temp_root(tmp_root: str | None, prefix: str) -> Path:
    """Where a node's Ray temp dir is made: `tmp_root` if given, else $TMPDIR (the system temp
    folder), else /tmp where $TMPDIR is too long for Ray's unix sockets."""
    root = Path(tmp_root if tmp_root is not None else tempfile.gettempdir())
    if tmp_root is None and not _socket_room(root, prefix) and _socket_room(Path("/tmp"), prefix):
        log.info("TMPDIR %s is too long for Ray's unix sockets (107 bytes): Ray's temp dir goes to /tmp", root)
        root = Path("/tmp")
    if not _socket_room(root, prefix):
        raise ClusterError(
            f"Ray temp dir {root / prefix}{'X' * TEMP_RANDOM} is too long for unix sockets (107 bytes): pass "
            "a shorter node-local tmp_root (or TMPDIR) such as /tmp"
        )
    return root


def _memory_args(mem_mb: int | None) -> list[str]:
    """Size Ray's object store (30 %, as Ray does for a whole machine) and its ``memory``
    resource (the rest) from the job's memory on the node, not the node's: /dev/shm use
    counts against the job's memory limit."""
    if not mem_mb or mem_mb < 512:
        return []
    total = mem_mb * 1024 * 1024
    store = int(total * 0.3)
    return [f"--object-store-memory={store}", f"--memory={total - store}"]


class _Node:
    """Shared set-up of one node of this cluster."""

    def __init__(self, alloc: Allocation, shared_dir: Path, tmp_root: str | None, grace_s: float):
        step = alloc.step_id if alloc.step_id is not None else "b"
        self.alloc = alloc
        self.key = f"{alloc.job_id}.{step}"
        self.run_dir = Path(shared_dir).resolve() / f"ray-{self.key}.r{alloc.restart_count}"
        self.token = self.run_dir / "token"
        self.head_file = self.run_dir / "head.json"
        self.shutdown_file = self.run_dir / "shutdown"
        # A random name made at start (private_temp_dir): a predictable one could be taken first.
        self.temp_prefix = f"{TEMP_PREFIX}{self.key}.{alloc.node_rank}-"
        self.tmp_root = _temp_root(tmp_root, self.temp_prefix)
        self.temp_dir: Path | None = None
        self.grace_s = grace_s
        self.multi = alloc.num_nodes > 1
        local = self.tmp_root.resolve()
        if self.multi and (self.run_dir == local or local in self.run_dir.parents):
            raise ClusterError(
                f"shared_dir {shared_dir} is under {self.tmp_root}, which is node-local: the nodes "
                "cannot meet there; pass a folder on shared storage (e.g. in the run directory)"
            )
        self.ip = resolve_ip(alloc.hostname, multi_node=self.multi)
        check_local_ip(self.ip, alloc.hostname)
        self.log_path = self.run_dir / f"ray-start.{alloc.node_rank}.{alloc.hostname}.log"
        # In the environment of every Ray process of this node: what teardown looks for.
        self.marker = f"{self.key}.r{alloc.restart_count}.{alloc.node_rank}-{secrets.token_hex(4)}"
        self.t0 = time.monotonic()

    def auth_env(self) -> dict[str, str]:
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token)}

    def ray_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
        env.update(self.auth_env())
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        if env.get("CUDA_VISIBLE_DEVICES", "").strip() == "NoDevFiles":
            del env["CUDA_VISIBLE_DEVICES"]  # Ray refuses --num-gpus > 0 with it
        return env

    def common_args(self) -> list[str]:
        a = self.alloc
        return [
            f"--node-ip-address={self.ip}",
            f"--temp-dir={self.temp_dir}",
            f"--num-cpus={a.cpus}",
            f"--num-gpus={a.gpus}",
            *_memory_args(a.mem_mb),
            "--disable-usage-stats",
            "--log-style=record",
            "--log-color=false",
        ]

    def start(self, args_for, deadline: float, stop_waiting=lambda: False,
              gate: list[str] | None = None) -> RayNodeProcess | None:
        """Start ``ray start`` with the first free port plan that works (up to 3 plans);
        None if ``stop_waiting()`` turned true first."""
        tried: set[int] = set()
        errors = []
        swept = sweep_stale_temp_dirs(self.tmp_root)
        if swept:
            log.info("removed stale Ray temp dirs of ended jobs: %s", ", ".join(map(str, swept)))
        for plan in candidate_plans(self.key, tried):
            tried.add(plan.base)
            self.temp_dir = private_temp_dir(self.tmp_root, self.temp_prefix)  # removed by node.stop()
            node = RayNodeProcess(
                self.common_args() + args_for(plan), self.ray_env(), self.log_path,
                self.marker, self.temp_dir, plan, gate,
            )
            node.start()
            last_check = time.monotonic()
            while not node.started():
                if node.returncode() is not None or time.monotonic() > deadline or stop_waiting():
                    break
                if time.monotonic() - last_check > 1.0:  # a GCS/raylet that could not bind
                    last_check = time.monotonic()
                    if node.port_conflict(ray_logs=True):
                        break
                time.sleep(0.05)
            if node.started():
                return node
            if stop_waiting():  # the head is gone already: nothing to join, no failure
                node.stop(self.grace_s)
                return None
            if node.waiting_for_head():
                node.stop(self.grace_s)
                raise ClusterError(
                    f"no Ray head became ready within {deadline - self.t0:.0f} s for "
                    f"{self.alloc.hostname}: see rank 0's output and {self.run_dir}"
                )
            conflict = node.port_conflict(ray_logs=True)
            why = ("a port was taken" if conflict else f"exited with {node.returncode()}"
                   if node.returncode() is not None else "timed out")
            errors.append(f"ports {plan.base}+: {why}: {node.log_tail(3)}")
            node.save_ray_logs()
            node.stop(self.grace_s)
            # Another port slot helps only when a port was the problem (taken since we checked).
            if conflict and len(tried) < 3 and time.monotonic() < deadline:
                log.info("ray start on %s: %s in slot %d, trying the next slot",
                         self.alloc.hostname, why, plan.base)
                continue
            break
        raise ClusterError(
            f"ray start failed on {self.alloc.hostname}: {'; '.join(errors) or 'no free port slot'}"
            f"; see {self.log_path}"
        )


def _head(node: _Node, timeout_s: float, t0: float) -> Iterator[ClusterHandle]:
    alloc = node.alloc
    node.nonce = secrets.token_hex(8)
    try:
        node.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(node.run_dir, 0o700)
        for stale in (node.shutdown_file, node.head_file):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        write_private(node.token, secrets.token_hex(32))
    except OSError as e:
        raise ClusterError(
            f"cannot write the cluster folder {node.run_dir} ({e.strerror}): pass a shared_dir "
            "on storage that all nodes can read and you can write"
        ) from None
    deadline = t0 + timeout_s
    client = client_server_available()

    def head_args(plan):
        address = f"{node.ip}:{plan.gcs}"
        info = {"address": address, "nonce": node.nonce, "nodes": alloc.num_nodes,
                "host": alloc.hostname, "pid": os.getpid(), "ready": False}
        write_private(node.head_file, json.dumps(info))  # not ready yet: workers keep waiting
        return ["--head", "--include-dashboard=false",
                *plan.ray_start_args(head=True, client_server=client)]

    proc = None
    try:
        proc = node.start(head_args, deadline)
        address = f"{node.ip}:{proc.plan.gcs}"
        info = {**read_json(node.head_file), "ready": True}
        write_private(node.head_file, json.dumps(info))  # the workers' gate opens
        log.info("ray head at %s (ports %d-%d, temp %s)", address, proc.plan.base,
                 proc.plan.base + proc.plan.size - 1, node.temp_dir)
        # RAY_DISABLE_FAILURE_SIGNAL_HANDLER: else ray.init() in this process installs a C++
        # handler that aborts on SIGTERM before Python (and this teardown) sees the signal.
        driver_env = {"RAY_ADDRESS": address, **node.auth_env(),
                      "RAY_DISABLE_FAILURE_SIGNAL_HANDLER": "1"}
        with environ(driver_env):
            refresh_cached_env()
            joined_s = _wait_for_nodes(node, address, proc, deadline, t0)
            try:
                yield ClusterHandle(True, address, node.ip, alloc.num_nodes, node.run_dir,
                                    dict(driver_env), joined_s, head_alive=lambda: proc.returncode() is None)
            finally:
                disconnect_driver()
        refresh_cached_env()  # forget this cluster's token: a later ray.init in this process has its own
    finally:
        with contextlib.suppress(OSError):
            write_private(node.shutdown_file, node.nonce)
        if proc is not None:
            killed = proc.stop(node.grace_s)
            log.info("ray stopped on %s%s", alloc.hostname,
                     f" ({killed} processes killed)" if killed else "")
        with contextlib.suppress(FileNotFoundError):
            node.token.unlink()


def _wait_for_nodes(node: _Node, address: str, proc, deadline: float, t0: float) -> float:
    alloc = node.alloc
    want = {}
    for host in alloc.nodes:
        try:
            want[host] = resolve_ip(host, multi_node=node.multi)
        except ClusterError:
            want[host] = None
    seen, clients = -1, {}
    while True:
        alive = alive_node_ips(address, clients) or []
        joined = [h for h, ip in want.items() if ip in alive]
        if len(alive) != seen:
            seen = len(alive)
            if seen < alloc.num_nodes:
                log.info("%d/%d nodes joined", seen, alloc.num_nodes)
        if len(alive) >= alloc.num_nodes:
            took = time.monotonic() - t0
            log.info("%d/%d nodes joined in %.1f s", seen, alloc.num_nodes, took)
            return took
        if proc.returncode() is not None:
            raise ClusterError(
                f"the Ray head on {alloc.hostname} exited with {proc.returncode()}: "
                f"{proc.log_tail(3)}; see {node.log_path}"
            )
        if time.monotonic() > deadline:
            missing = ", ".join(h for h in want if h not in joined)
            raise ClusterError(
                f"nodes {missing} did not join the Ray cluster within {deadline - t0:.0f} s: "
                f"see their logs in {node.run_dir}, or raise the timeout"
            )
        time.sleep(0.2)


def _worker(node: _Node, timeout_s: float, t0: float) -> ClusterHandle:
    """Start Ray at once, gated: its launcher imports Ray while the head starts and runs
    ``ray start --address`` the moment ``head.json`` says the head is ready."""
    alloc = node.alloc
    deadline = t0 + timeout_s
    stale = read_text(node.shutdown_file)  # a previous bring-up's nonce in this folder

    def current_head() -> dict | None:
        info = read_json(node.head_file)
        return info if info and info.get("nonce") != stale else None

    def head_stopped() -> bool:
        info = current_head()
        return bool(info) and read_text(node.shutdown_file) == info["nonce"]

    gate = [str(node.head_file), str(node.shutdown_file), stale or "-",
            str(time.time() + deadline - time.monotonic())]
    proc = None
    try:
        proc = node.start(
            lambda plan: ["--address={address}",
                          *plan.ray_start_args(head=False, client_server=False)],
            deadline, head_stopped, gate=gate,
        )
        info = current_head() or {}
        address = info.get("address", "")
        if proc is None:
            log.info("ray head %s stopped while Ray on %s was still starting", address, alloc.hostname)
            return ClusterHandle(False, address, node.ip, alloc.num_nodes, node.run_dir)
        log.info("ray worker on %s joined %s", alloc.hostname, address)
        host, port = address.rsplit(":", 1)
        misses, last_probe = 0, 0.0
        while read_text(node.shutdown_file) != info["nonce"]:
            if proc.returncode() is not None:
                if tcp_open(host, int(port)):
                    raise ClusterError(
                        f"Ray on {alloc.hostname} exited with {proc.returncode()} while the head "
                        f"still runs: {proc.log_tail(3)}; see {node.log_path}"
                    )
                break
            if time.monotonic() - last_probe >= 1.0:
                last_probe = time.monotonic()
                misses = 0 if tcp_open(host, int(port)) else misses + 1
                if misses >= _HEAD_LOST_PROBES:
                    log.info("ray head %s is gone", address)
                    break
            time.sleep(0.25)
    finally:
        if proc is not None:
            killed = proc.stop(node.grace_s)
            log.info("ray stopped on %s%s", alloc.hostname,
                     f" ({killed} processes killed)" if killed else "")
    return ClusterHandle(False, address, node.ip, alloc.num_nodes, node.run_dir)


@contextlib.contextmanager
def ray_cluster(
    allocation: Allocation | None,
    shared_dir: str | os.PathLike,
    *,
    timeout_s: float = 120.0,
    tmp_root: str | None = None,
    grace_s: float = 3.0,
    handle_signals: bool = True,
) -> Iterator[ClusterHandle]:
    """Form a Ray cluster over ``allocation``'s nodes (one task per node calls this).

    On rank 0 the body runs once all nodes have joined, with ``RAY_ADDRESS`` and the token
    variables set in ``os.environ`` (``handle.driver_env``), so ``ray.init()`` (or
    ``ray.init(address=handle.address)``) connects. On ranks > 0 this blocks as a Ray worker
    until the head is gone, then runs the body with ``handle.is_head`` False.
    ``shared_dir`` must be on storage all nodes see; ``tmp_root`` (default ``$TMPDIR``, else /tmp)
    must be node-local: each node makes its Ray temp dir there, private and randomly named.
    Raises ``ClusterError`` when nodes do not join within ``timeout_s``.
    """
    t0 = time.monotonic()
    alloc = allocation if allocation is not None else Allocation.from_env()
    if alloc is None:
        raise ClusterError(
            "not inside a SLURM job (no SLURM_JOB_ID): submit with sbatch/srun, or run the "
            "search locally without a cluster"
        )
    if alloc.tasks_on_node != 1 or alloc.local_rank != 0:
        raise ClusterError(
            f"{alloc.tasks_on_node} tasks on node {alloc.hostname}: the Ray cluster needs "
            "exactly one task per node; launch with srun --ntasks-per-node=1"
        )
    with exit_on_signals(handle_signals):
        node = _Node(alloc, Path(shared_dir), tmp_root, grace_s)
        if alloc.is_head:
            yield from _head(node, timeout_s, t0)
        else:
            yield _worker(node, timeout_s, t0)

