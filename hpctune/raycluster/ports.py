"""Address and ports of a Ray node: its IP from the system resolver, and ports chosen so that
jobs sharing a machine never collide.

Every port a Ray 2.60 node listens on is pinned, so that two jobs (of one or of two
users) on the same machine never collide on Ray's fixed defaults (6379, 8265, 10001, 52365,
workers in 10002-19999). Ports come in *slots* of ``SLOT_SIZE`` consecutive ports in
[``PORT_LOW``, min(32768, start of the kernel's ephemeral range)): ``FIXED`` ports for the
named components, the rest for workers. The preferred slot is derived from the job id (so
concurrent jobs with nearby ids get different slots); each node checks that every port of
the slot is free before use and probes the following slots otherwise; a port taken between
that check and Ray's bind (the GCS or raylet log says so) moves the node to the next slot.
Slot layout (offsets): 0 GCS (head), 1 ray client server (head, if ray[client] is installed),
2 dashboard (head; its process runs even with the dashboard off), 3 node manager, 4 object
manager, 5 dashboard agent http, 6 dashboard agent grpc, 7 runtime env agent, 8 metrics
export, 9 spare, 10..199 worker processes (the driver's core worker takes one too).
"""

from __future__ import annotations

import errno
import socket
import zlib
from dataclasses import dataclass
from pathlib import Path

from hpctune.errors import ClusterError

PORT_LOW = 20000
PORT_HIGH = 32768
SLOT_SIZE = 200
FIXED = 10


@dataclass(frozen=True)
class PortPlan:
    """The ports of one Ray node: ``FIXED`` named ones at ``base`` and a worker range after."""

    base: int
    size: int = SLOT_SIZE

    @property
    def gcs(self) -> int:
        return self.base

    def named(self) -> dict[str, int]:
        b = self.base
        return {
            "--port": b,  # GCS (head only)
            "--ray-client-server-port": b + 1,  # head only, if ray[client] is installed
            "--dashboard-port": b + 2,  # head only; the dashboard head runs even when disabled
            "--node-manager-port": b + 3,
            "--object-manager-port": b + 4,
            "--dashboard-agent-listen-port": b + 5,
            "--dashboard-agent-grpc-port": b + 6,
            "--runtime-env-agent-port": b + 7,
            "--metrics-export-port": b + 8,
        }

    @property
    def worker_ports(self) -> tuple[int, int]:
        return self.base + FIXED, self.base + self.size - 1

    def all_ports(self) -> range:
        return range(self.base, self.base + self.size)

    def ray_start_args(self, *, head: bool, client_server: bool) -> list[str]:
        head_only = {"--port", "--ray-client-server-port", "--dashboard-port"}
        args = []
        for flag, port in self.named().items():
            if flag in head_only and not head:
                continue
            if flag == "--ray-client-server-port" and not client_server:
                continue
            args.append(f"{flag}={port}")
        lo, hi = self.worker_ports
        args += [f"--min-worker-port={lo}", f"--max-worker-port={hi}"]
        return args


def port_range() -> tuple[int, int]:
    """[low, high) for port slots: below the kernel's ephemeral range where possible."""
    high = PORT_HIGH
    try:
        eph_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        if PORT_LOW + 8 * SLOT_SIZE <= eph_low < high:
            high = eph_low
    except (OSError, ValueError, IndexError):
        pass
    return PORT_LOW, high


def preferred_slot(key: str, nslots: int) -> int:
    """Slot index for a job key like '1234.0': job ids in a row get slots in a row."""
    job, _, rest = key.partition(".")
    n = int(job) if job.isdigit() else zlib.crc32(job.encode())
    step = int(rest) if rest.isdigit() else zlib.crc32(rest.encode()) if rest else 0
    return (n + 17 * step) % nslots


def port_is_free(port: int) -> bool:
    """True if nothing listens on, or holds, ``port`` on any local address (TCP)."""
    for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 here
        try:
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((addr, port))
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                continue
            return False
        finally:
            s.close()
    return True


def candidate_plans(key: str, skip: set[int] = frozenset()):
    """Port plans to try on this node, preferred slot first, each checked free just before."""
    low, high = port_range()
    nslots = max(1, (high - low) // SLOT_SIZE)
    first = preferred_slot(key, nslots)
    for i in range(nslots):
        plan = PortPlan(low + ((first + i) % nslots) * SLOT_SIZE)
        if plan.base in skip:
            continue
        if all(port_is_free(p) for p in plan.all_ports()):
            yield plan


def tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def client_server_available() -> bool:
    """``--ray-client-server-port`` is refused unless ray[client] (grpc) is installed."""
    import importlib.util

    return importlib.util.find_spec("grpc") is not None


def resolve_ip(hostname: str, *, multi_node: bool = True) -> str:
    """IPv4 of ``hostname`` from the system resolver (/etc/hosts, DNS): never an outside probe."""
    try:
        infos = socket.getaddrinfo(hostname, None, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ClusterError(
            f"cannot resolve SLURM node name {hostname!r} ({e.strerror}): add it to /etc/hosts "
            "or DNS on every node"
        ) from None
    ips = [info[4][0] for info in infos]
    routable = [ip for ip in ips if not ip.startswith("127.")]
    if routable:
        return routable[0]
    if multi_node:
        raise ClusterError(
            f"SLURM node name {hostname!r} resolves to loopback {ips[0]}: other nodes cannot "
            "reach it; map the node name to its cluster IP in /etc/hosts or DNS"
        )
    return ips[0]


def check_local_ip(ip: str, hostname: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((ip, 0))
        except OSError:
            raise ClusterError(
                f"{hostname} resolves to {ip}, which is not an address of this machine: fix "
                "/etc/hosts or DNS so the SLURM node name maps to this node's own IP"
            ) from None
