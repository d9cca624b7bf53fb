#!/usr/bin/env bash
# Stop the local test Slurm cluster started by scripts/slurm-cluster-up.sh.
#
# Stops exactly what the up script started (pid files in the state dir, and every process
# inside the nodes' network namespaces: slurmd, slurmstepd and the jobs), then deletes the
# namespaces, veths and bridge. Packages, configuration and the accounting database stay.
# Idempotent. Environment: HPCTUNE_SLURM_STATE (default /var/lib/hpctune-test-slurm).
set -euo pipefail

STATE=${HPCTUNE_SLURM_STATE:-/var/lib/hpctune-test-slurm}
BRIDGE=hpct-br0
NS_PREFIX=hpct-
ACTIVE=/run/hpctune-test-slurm.state

log() { echo "slurm-cluster-down: $*"; }
[[ $(id -u) == 0 ]] || { echo "slurm-cluster-down: ERROR: must run as root" >&2; exit 1; }
T0=$(date +%s.%N)

if [[ -d $STATE ]]; then
    exec 9>"$STATE/lock"
    flock -w 300 9 || { echo "slurm-cluster-down: ERROR: could not lock $STATE/lock" >&2; exit 1; }
    rm -f "$STATE/env"   # first: tests must stop treating the cluster as up
fi

# running PID: alive and not a zombie (pid 1 here reaps orphans only after a while).
running() {
    local stat
    { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1   # no fork: polled often
    stat=${stat##*) }
    [[ $stat != [ZX]* ]]
}

# pid_of PIDFILE COMM: print the pid if it is running and still that program.
pid_of() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ && $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] && running "$pid" && echo "$pid"
}

# stop WHAT SECONDS PID...: SIGTERM (a repeated one is harmless), wait for all of them,
# SIGKILL whatever is left.
stop() {
    local what=$1 secs=$2 p left t0=$EPOCHREALTIME; shift 2
    (($#)) || return 0
    kill -TERM "$@" 2>/dev/null || true
    for ((t = 0; t < secs * 10; t++)); do
        left=()
        for p in "$@"; do running "$p" && left+=("$p"); done
        if ((${#left[@]} == 0)); then
            log "$what stopped ($(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')s)"
            return 0
        fi
        sleep 0.1
    done
    log "$what: SIGKILL to pids still running after ${secs}s: ${left[*]}"
    kill -KILL "${left[@]}" 2>/dev/null || true
    sleep 0.2
}

# 1. The controller, the nodes and what runs on them. slurmd leaves slurmstepd and the
#    jobs running when it stops, and both ignore SIGTERM for a while: every other process
#    in the node network namespaces (all started by our slurmds) gets SIGTERM, then SIGKILL
#    after 3 s, like a node losing power. slurmctld and slurmd (~2 s each) stop meanwhile.
daemons=()
for f in "$STATE"/run/slurmd-*.pid; do
    p=$(pid_of "$f" slurmd) && daemons+=("$p")
done
p=$(pid_of "$STATE/run/slurmctld.pid" slurmctld) && daemons+=("$p")
jobs=()
for ns in $(ip netns list 2>/dev/null | awk -v pre="$NS_PREFIX" 'index($1, pre) == 1 { print $1 }'); do
    for p in $(ip netns pids "$ns" 2>/dev/null); do
        [[ " ${daemons[*]} " == *" $p "* ]] || jobs+=("$p")
    done
done
((${#daemons[@]} == 0)) || kill -TERM "${daemons[@]}" 2>/dev/null || true
stop "slurmstepd and jobs" 3 "${jobs[@]}"
stop "slurmctld, slurmd" 10 "${daemons[@]}"

# 2. Accounting after the controller (it flushes job records to slurmdbd when it stops).
p=$(pid_of "$STATE/run/slurmdbd.pid" slurmdbd) && stop slurmdbd 15 "$p"
p=$(pid_of "$STATE/mysql/mariadbd.pid" mariadbd) && stop mariadbd 30 "$p"

# 3. munged last (the others use it while stopping), and only if the up script started it.
if p=$(pid_of "$STATE/run/munged.pid" munged); then stop munged 10 "$p"; fi
rm -f "$STATE"/run/munged.pid

# 4. Network: namespaces, their veths (freed only later if left to the netns), the bridge.
for ns in $(ip netns list 2>/dev/null | awk -v pre="$NS_PREFIX" 'index($1, pre) == 1 { print $1 }'); do
    ip netns del "$ns" 2>/dev/null || true
done
for veth in $(ip -o link show 2>/dev/null | awk -F': ' -v pre="$NS_PREFIX" 'index($2, pre) == 1 { sub(/@.*/, "", $2); print $2 }'); do
    [[ $veth == "$BRIDGE" ]] || ip link del "$veth" 2>/dev/null || true
done
ip link del "$BRIDGE" 2>/dev/null || true

# 5. The /etc/slurm/slurm.conf symlink the up script made, and the "active cluster" marker.
if [[ -L /etc/slurm/slurm.conf && $(readlink /etc/slurm/slurm.conf) == "$STATE/etc/slurm.conf" ]]; then
    rm -f /etc/slurm/slurm.conf
fi
[[ -s $ACTIVE && $(cat "$ACTIVE") != "$STATE" ]] || rm -f "$ACTIVE"

log "stopped in $(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s (state kept in $STATE)"
