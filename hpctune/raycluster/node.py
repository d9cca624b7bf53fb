"""One Ray node on this machine: its ``ray start`` process and its teardown.

Used by ``hpctune.raycluster.cluster``; knows nothing of SLURM or of the search. Ports come from
``hpctune.raycluster.ports``.

Start. A worker node's ``ray start`` can be launched before the head is up: ``--gate`` runs
this file as a script that imports Ray's CLI first and starts the node the moment the head
says it is ready (see ``_gate_main``).

Teardown. ``ray start --block`` runs in its own session with a marker variable in its
environment; every Ray process it starts inherits both (Ray workers set their own process
group, but stay in the session). ``stop()`` sends SIGTERM to ``ray start`` (it stops its
children), waits a short grace, then SIGKILLs whatever is left of that session or carries
the marker: only this node's processes of this cluster, never a machine-wide ``ray stop``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hpctune.errors import ClusterError
from hpctune.raycluster.ports import PortPlan
from hpctune.run.rundir import atomic_write_text

MARKER_VAR = "HPCTUNE_RAY_NODE"
STARTED_LINE = "Ray runtime started."
GATE_OPEN = "hpctune: Ray head ready at"
STOPPED_LINE = "hpctune: this node's Ray stopped, temp dir removed"
_CONFLICT_WORDS = ("address already in use", "no address added", "failed to bind", "already occupied",
                   "errno 98")


def ray_command() -> list[str]:
    """Ray's command line under the running interpreter: an environment may have no ``ray`` script beside
    it (a venv made by hand, a container), and one found on PATH may belong to another environment."""
    return [sys.executable, "-m", "ray.scripts.scripts"]


def write_private(path: Path, text: str) -> None:
    """Atomically write ``text`` to ``path`` with mode 0600 (the temporary file is 0600 from its creation)."""
    atomic_write_text(path, text, mode=0o600)


def read_json(path: Path) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_text(path: Path) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG: we die, ray start cleans up
    except OSError:
        pass


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, session id) of a process, None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()
    return fields[0], int(fields[3])


def _has_marker(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def find_processes(session: int | None, marker: str) -> list[int]:
    """Live processes of ours in ``session`` or with ``MARKER_VAR=marker`` in their environment."""
    needle = f"{MARKER_VAR}={marker}\0".encode()
    me, uid = os.getpid(), os.getuid()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == me:
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
        except OSError:
            continue
        st = _proc_stat(pid)
        if st is None or st[0] in ("Z", "X"):
            continue
        if (session is not None and st[1] == session) or _has_marker(pid, needle):
            found.append(pid)
    return found


def _live_marker_keys() -> set[str]:
    """Job-step keys ('<job>.<step>') named by the markers of our live processes."""
    keys, uid = set(), os.getuid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            env = Path(f"/proc/{entry.name}/environ").read_bytes()
        except OSError:
            continue
        for m in re.finditer(rb"(?:^|\0)" + MARKER_VAR.encode() + rb"=([^\0]*?)\.r\d+\.", env):
            keys.add(m.group(1).decode(errors="replace"))
    return keys


TEMP_PREFIX = "hpct-"  # temp dirs are TEMP_PREFIX + "<job>.<step>.<rank>-<random>"
TEMP_RANDOM = 8  # characters tempfile.mkdtemp adds to the prefix


def check_temp_root(root: Path) -> None:
    """Ray's temp dir holds its sockets and session files: the folder it is made in must be ours or
    root's, and sticky where anyone may write to it (as /tmp is), or another user could move ours."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        st = root.stat()
    except OSError as exc:
        raise ClusterError(f"Ray temp folder {root} cannot be used ({exc.strerror}): set TMPDIR to a "
                           "node-local folder you can write, such as /tmp") from None
    if st.st_uid not in (0, os.getuid()) or (st.st_mode & 0o002 and not st.st_mode & stat.S_ISVTX):
        raise ClusterError(f"Ray temp folder {root} is owned by uid {st.st_uid} (not you or root) or writable "
                           "by all without the sticky bit: set TMPDIR to a node-local folder of yours, such as /tmp")


def private_temp_dir(root: Path, prefix: str) -> Path:
    """A new folder ``root/<prefix><random>``, mode 0700: nobody can take its name first, and a
    folder that is not ours is refused rather than used."""
    check_temp_root(root)
    try:
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
        st = path.lstat()
    except OSError as exc:
        raise ClusterError(f"cannot create Ray's temp dir in {root} ({exc.strerror}): set TMPDIR to a "
                           "node-local folder you can write, such as /tmp") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ClusterError(f"Ray temp dir {path} is not a private folder of yours (uid {st.st_uid}, mode "
                           f"{stat.S_IMODE(st.st_mode):o}): set TMPDIR to a node-local folder of yours, such as /tmp")
    return path


def temp_dir_key(path: Path) -> str:
    """The job-step key ('<job>.<step>') in a temp dir's name, with or without its random suffix."""
    return path.name[len(TEMP_PREFIX):].split("-", 1)[0].rsplit(".", 1)[0]


def sweep_stale_temp_dirs(tmp_root: Path, min_age_s: float = 60.0) -> list[Path]:
    """Remove our ``hpct-<job>.<step>.<rank>-<random>`` temp dirs that no live process of ours uses
    (a job killed before its teardown, e.g. by SLURM after KillWait). Returns them. Folders of
    other users are never touched."""
    now, uid = time.time(), os.getuid()
    old = []
    for path in Path(tmp_root).glob(f"{TEMP_PREFIX}*"):
        try:
            st = path.lstat()
        except OSError:
            continue
        if path.is_dir() and not path.is_symlink() and st.st_uid == uid and now - st.st_mtime > min_age_s:
            old.append(path)
    if not old:
        return []
    live = _live_marker_keys()
    gone = [p for p in old if temp_dir_key(p) not in live]
    for path in gone:
        shutil.rmtree(path, ignore_errors=True)
    return gone


class RayNodeProcess:
    """``ray start --block`` for one node, in its own session, logging to ``log_path``."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path, marker: str,
                 temp_dir: Path, plan: PortPlan | None = None, gate: list[str] | None = None):
        self.args = args
        self.plan = plan
        self.gate = gate
        self.env = {**env, MARKER_VAR: marker}
        self.log_path = log_path
        self.marker = marker
        self.temp_dir = temp_dir
        self.proc: subprocess.Popen | None = None
        self._log_from = 0  # where this attempt's lines start in a log shared by attempts

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab", buffering=0) as log:
            self._log_from = log.tell()
            os.chmod(self.log_path, 0o600)
            if self.gate:  # this file as a script: import Ray now, start when the head is ready
                cmd = [sys.executable, "-u", __file__, "--gate", *self.gate, "--"]
            else:
                cmd = ray_command()
            self.proc = subprocess.Popen(
                [*cmd, "start", "--block", *self.args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
                cwd=str(self.temp_dir),
            )

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def started(self) -> bool:
        """True once ``ray start`` reported its node up (and it is still running)."""
        if self.returncode() is not None:
            return False
        return STARTED_LINE in self._log()

    def waiting_for_head(self) -> bool:
        """True while a gated start still waits for the head (see ``_gate_main``)."""
        return bool(self.gate) and GATE_OPEN not in self._log()

    def _log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_from)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def port_conflict(self, ray_logs: bool = False) -> bool:
        """Whether this attempt's log (or, with ``ray_logs``, the GCS/raylet logs in the temp
        dir, where a gRPC server that cannot bind says so at once) says a port was taken."""
        texts = [self._log()]
        if ray_logs:
            for path in self.temp_dir.glob("session_2*/logs/*"):
                if path.name.startswith(("gcs_server.", "raylet.")):
                    with contextlib.suppress(OSError):
                        texts.append(path.read_text(errors="replace"))
        text = "\n".join(texts).lower()
        return any(k in text for k in _CONFLICT_WORDS)

    def log_tail(self, lines: int = 5) -> str:
        text = self._log().strip().splitlines()
        return " | ".join(line.strip() for line in text[-lines:])

    def save_ray_logs(self, lines: int = 15) -> None:
        """Append the tails of this node's GCS/raylet logs to our log (the temp dir they live
        in is removed at stop): what to read when a start failed."""
        names = ("gcs_server.out", "gcs_server.err", "raylet.out", "raylet.err")
        with open(self.log_path, "a") as out:
            for path in sorted(self.temp_dir.glob("session_2*/logs/*")):  # not session_latest
                if path.name not in names:
                    continue
                try:
                    text = path.read_text(errors="replace").splitlines()
                except OSError:
                    continue
                # The cause is often above a long stack trace: keep the lines that name it.
                causes = [ln for ln in text if any(w in ln.lower() for w in _CONFLICT_WORDS)][:3]
                if text:
                    out.write(f"---- hpctune: {path.name}\n" + "\n".join(causes + text[-lines:]) + "\n")

    def stop(self, grace_s: float = 3.0) -> int:
        """Stop this node's Ray processes (TERM, then KILL after ``grace_s``); return how many
        had to be killed."""
        session = self.proc.pid if self.proc is not None else None
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if (self.proc is None or self.proc.poll() is not None) and not find_processes(
                session, self.marker
            ):
                break
            time.sleep(0.1)
        killed = 0
        for _ in range(3):
            left = find_processes(session, self.marker)
            if self.proc is not None and self.proc.poll() is None:
                left.append(self.proc.pid)
            if not left:
                break
            for pid in set(left):
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        with contextlib.suppress(OSError), open(self.log_path, "a") as out:
            out.write(f"{STOPPED_LINE} ({killed} processes killed after {grace_s:g} s)\n")
        return killed


def _gate_main(argv: list[str]) -> int:
    """``ray_node.py --gate HEAD_JSON SHUTDOWN STALE DEADLINE -- start ... --address={address}``

    Import Ray's CLI first (about a second), then wait until HEAD_JSON says a head is ready
    (nonce not STALE, not shut down), then run ``ray start`` with its address filled in, in
    this same process. Run as a script, so it needs nothing on sys.path but Ray.
    """
    head_json, shutdown, stale, deadline = argv[:4]
    rest = argv[argv.index("--") + 1 :]
    from ray.scripts.scripts import main as ray_main

    print("hpctune: waiting for the Ray head", flush=True)
    while True:
        info = read_json(Path(head_json)) or {}
        done = read_text(Path(shutdown))
        nonce = info.get("nonce")
        if nonce and nonce != stale and done == nonce:
            print("hpctune: the Ray head stopped before this node joined", flush=True)
            return 0
        if info.get("ready") and nonce != stale:
            break
        if time.time() > float(deadline):
            print("hpctune: gave up waiting for the Ray head", flush=True)
            return 3
        time.sleep(0.1)
    print(f"{GATE_OPEN} {info['address']}", flush=True)
    sys.argv = ["ray", *(a.replace("{address}", info["address"]) for a in rest)]
    return ray_main()


if __name__ == "__main__" and sys.argv[1:2] == ["--gate"]:
    sys.exit(_gate_main(sys.argv[2:]))
