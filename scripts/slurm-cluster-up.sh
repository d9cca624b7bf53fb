#!/usr/bin/env bash
# Bring up a real multi-node Slurm cluster on this one machine, for tests and CI.
#
#   sudo scripts/slurm-cluster-up.sh          # idempotent; ends with the cluster idle
#   source /var/lib/hpctune-test-slurm/env    # SLURM_CONF, HPCTUNE_TEST_SLURM=1, node names...
#
# munge, mariadb, slurmdbd and slurmctld run in the root network namespace (the controller
# under its own hostname "slurmctl"); every node nI runs its slurmd in its own network, UTS
# and mount namespace (own IP on a bridge, own hostname, node-local /tmp). The rest of the
# filesystem is shared by all nodes, like a cluster's shared storage.
# See scripts/local-slurm/README.md. Stop with scripts/slurm-cluster-down.sh.
#
# Environment: HPCTUNE_TEST_NODES (default 3), HPCTUNE_SLURM_STATE (default
# /var/lib/hpctune-test-slurm), HPCTUNE_SLURM_UP_TIMEOUT (seconds, default 60).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TEMPLATES=$HERE/local-slurm
STATE=${HPCTUNE_SLURM_STATE:-/var/lib/hpctune-test-slurm}
N=${HPCTUNE_TEST_NODES:-3}
TIMEOUT=${HPCTUNE_SLURM_UP_TIMEOUT:-60}

# Network layout: bridge in the root namespace, node i at 10.199.0.(10+i).
NET=10.199.0
CTL_IP=$NET.1
BRIDGE=hpct-br0
NS_PREFIX=hpct-          # netns hpct-nI; host end of its veth: hpct-nIv (<= 15 chars)
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)

die() { echo "slurm-cluster-up: ERROR: $*" >&2; exit 1; }
log() { echo "slurm-cluster-up: $*"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

[[ $(id -u) == 0 ]] || die "must run as root (it starts daemons and creates network namespaces)"
if ! [[ $N =~ ^[0-9]+$ ]] || ((N < 1 || N > 64)); then
    die "HPCTUNE_TEST_NODES must be 1..64, got '$N'"
fi
[[ $STATE == /* ]] || die "HPCTUNE_SLURM_STATE must be an absolute path, got '$STATE'"

T0=$(now)

# ---------------------------------------------------------------- packages
install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    command -v ip >/dev/null || missing+=(iproute2)
    command -v nsenter >/dev/null && command -v unshare >/dev/null || missing+=(util-linux)
    ((${#missing[@]})) || return 0
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # The package lists may be missing on a fresh image: update once and retry.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
        die "apt-get install ${missing[*]} failed"
}
install_packages
T_PKG=$(elapsed "$T0")

mkdir -p "$STATE"/{etc,run,log,spool/ctld,nodes}
# One up/down at a time (e.g. several test workers calling up at once). Daemons are
# started with 9>&- so they do not inherit (and hold) this lock.
exec 9>"$STATE/lock"
flock -w 300 9 || die "could not lock $STATE/lock"

T1=$(now)
DEADLINE=$(awk -v t="$T1" -v d="$TIMEOUT" 'BEGIN { printf "%d", t + d }')
time_left() { echo $(( DEADLINE - $(date +%s) )); }

# ---------------------------------------------------------------- helpers
node_ip() { echo "$NET.$((10 + $1))"; }
NODES=(); IPS=()
for ((i = 1; i <= N; i++)); do NODES+=("n$i"); IPS+=("$(node_ip "$i")"); done
NODELIST="n[1-$N]"
NODEADDRS="$NET.[11-$((10 + N))]"
CONF=$STATE/etc/slurm.conf
HOSTS=$STATE/etc/hosts
export SLURM_CONF=$CONF   # all slurm commands and daemons below use our config

# alive PIDFILE COMM: the pid file names a live process with that command name.
# Zombies do not count: pid 1 here reaps orphans only after a while.
alive() {
    local pid stat
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ $stat == "$pid ($2) "[!ZX]* ]]
}

# wait_for DESCRIPTION COMMAND...: retry until it succeeds or the deadline passes.
wait_for() {
    local what=$1; shift
    until "$@" >/dev/null 2>&1; do
        (($(time_left) > 0)) || fail "timed out after ${TIMEOUT}s waiting for $what"
        sleep 0.2
    done
}
tcp_open() { timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

fail() {
    rm -f "$STATE/env"
    echo "slurm-cluster-up: ERROR: $*" >&2
    echo "slurm-cluster-up: the cluster is NOT up. Log tails from $STATE/log:" >&2
    local f
    for f in "$STATE"/log/*.log; do
        [[ -s $f ]] || continue
        echo "---- $f" >&2; tail -n 8 "$f" >&2
    done
    if command -v sinfo >/dev/null; then sinfo -N 2>&1 | sed 's/^/    /' >&2 || true; fi
    exit 1
}

# render TEMPLATE: fill the placeholders; lines starting with @PER_NODE@ repeat per node.
render() {
    local line l i
    while IFS= read -r line || [[ -n $line ]]; do
        line=${line//@STATE@/"$STATE"}
        line=${line//@CTL_IP@/"$CTL_IP"}
        line=${line//@NODELIST@/"$NODELIST"}
        line=${line//@NODEADDRS@/"$NODEADDRS"}
        line=${line//@DBPASS@/"$DBPASS"}
        if [[ $line == @PER_NODE@* ]]; then
            line=${line#@PER_NODE@}
            for ((i = 1; i <= N; i++)); do
                l=${line//@NODE_IP@/"$(node_ip "$i")"}
                printf '%s\n' "${l//@NODE@/"n$i"}"
            done
        else
            printf '%s\n' "$line"
        fi
    done <"$1"
}

slurm_running() {
    local f
    alive "$STATE/run/slurmctld.pid" slurmctld && return 0
    for f in "$STATE"/run/slurmd-*.pid; do alive "$f" slurmd && return 0; done
    return 1
}

# ---------------------------------------------------------------- configuration
# The env file means "cluster up and verified": written last, removed on failure and by down.
# Only one such cluster per machine: the bridge, ports and namespaces are fixed.
ACTIVE=/run/hpctune-test-slurm.state
if [[ -s $ACTIVE && $(cat "$ACTIVE") != "$STATE" ]] &&
    alive "$(cat "$ACTIVE")/run/slurmctld.pid" slurmctld; then
    die "a cluster from $(cat "$ACTIVE") is running; stop it first: HPCTUNE_SLURM_STATE=$(cat "$ACTIVE") $HERE/slurm-cluster-down.sh"
fi
echo "$STATE" >"$ACTIVE"

[[ -s $STATE/etc/dbpass ]] || (umask 077 && od -An -N12 -tx1 /dev/urandom | tr -d ' \n' >"$STATE/etc/dbpass")
DBPASS=$(cat "$STATE/etc/dbpass")

NEW=$(mktemp -d)
trap 'rm -rf "$NEW"' EXIT
render "$TEMPLATES/slurm.conf.in" >"$NEW/slurm.conf"
render "$TEMPLATES/gres.conf.in" >"$NEW/gres.conf"
render "$TEMPLATES/slurmdbd.conf.in" >"$NEW/slurmdbd.conf"
render "$TEMPLATES/hosts.in" >"$NEW/hosts"
CHANGED=0
for f in slurm.conf gres.conf slurmdbd.conf hosts; do
    cmp -s "$NEW/$f" "$STATE/etc/$f" || CHANGED=1
done
if ((CHANGED)) && slurm_running; then
    # e.g. another node count: slurmctld cannot pick that up with a reconfigure.
    log "configuration changed (now $N nodes, or edited templates): restarting the cluster"
    flock -u 9
    "$HERE/slurm-cluster-down.sh"
    flock -w 300 9 || die "could not lock $STATE/lock"
    echo "$STATE" >"$ACTIVE"
fi
if ((CHANGED)); then
    install -m 0644 "$NEW/slurm.conf" "$NEW/gres.conf" "$NEW/hosts" "$STATE/etc/"
    install -m 0600 "$NEW/slurmdbd.conf" "$STATE/etc/"   # slurmdbd insists on 0600
fi

# Clients without SLURM_CONF (e.g. a test that forgot to source the env file) read
# /etc/slurm/slurm.conf: point it at ours, unless a real config is there.
if [[ ! -e /etc/slurm/slurm.conf || -L /etc/slurm/slurm.conf ]]; then
    mkdir -p /etc/slurm && ln -sfn "$CONF" /etc/slurm/slurm.conf
else
    log "note: /etc/slurm/slurm.conf is a real file; use SLURM_CONF=$CONF (in $STATE/env)"
fi

STARTED=()   # what this run had to start; empty = everything was already up

# ---------------------------------------------------------------- munge
start_munge() {
    # A working munged (ours or the machine's) is all Slurm needs.
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
    [[ -s /etc/munge/munge.key ]] || runuser -u munge -- mungekey --create >/dev/null
    install -d -o munge -g munge -m 0755 /run/munge
    # --force: take over a stale socket left by a killed munged.
    runuser -u munge -- munged --force 9>&-
    cp /run/munge/munged.pid "$STATE/run/munged.pid"   # marks it as ours for the down script
    wait_for "munged" bash -c 'munge -n </dev/null | unmunge'
    STARTED+=(munged)
}

# ---------------------------------------------------------------- mariadb
MYSQL_DIR=$STATE/mysql
MYSQL_SOCK=$MYSQL_DIR/sock
MYSQL_PID=$MYSQL_DIR/mariadbd.pid   # in a dir mysql may write to
mysql_root() { mariadb --no-defaults --socket="$MYSQL_SOCK" -u root; }
start_mariadb() {
    if ! alive "$MYSQL_PID" mariadbd; then
        install -d -o mysql -g mysql -m 0750 "$MYSQL_DIR"
        if [[ ! -d $MYSQL_DIR/data/mysql ]]; then
            mariadb-install-db --no-defaults --user=mysql --datadir="$MYSQL_DIR/data" \
                --skip-test-db >"$STATE/log/mariadb-install.txt" 2>&1 ||
                fail "mariadb-install-db failed (see $STATE/log/mariadb-install.txt)"
        fi
        install -o mysql -g mysql -m 0640 /dev/null "$STATE/log/mariadb.log" 2>/dev/null ||
            chown mysql:mysql "$STATE/log/mariadb.log"
        # The smallest sizes slurmdbd accepts without a warning.
        setsid -f mariadbd --no-defaults --user=mysql --datadir="$MYSQL_DIR/data" \
            --socket="$MYSQL_SOCK" --pid-file="$MYSQL_PID" --log-error="$STATE/log/mariadb.log" \
            --bind-address=127.0.0.1 --port=3307 --skip-name-resolve \
            --innodb-buffer-pool-size=128M --innodb-log-file-size=64M \
            --innodb-lock-wait-timeout=900 --performance-schema=OFF </dev/null >/dev/null 2>&1 9>&-
        STARTED+=(mariadbd)
    fi
    wait_for "mariadbd" mariadb-admin --no-defaults --socket="$MYSQL_SOCK" -u root ping
    # Idempotent; also repairs the user if the password file was recreated.
    mysql_root <<SQL || fail "could not create the slurm database user"
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DBPASS';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DBPASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL
}

# ---------------------------------------------------------------- controller side
# Run a daemon under its own hostname "slurmctl" (slurmctld/slurmdbd compare their
# hostname with SlurmctldHost/DbdHost), with the cluster's hosts file.
as_slurmctl() {
    unshare --uts --mount sh -c "hostname slurmctl && mount --bind '$HOSTS' /etc/hosts && exec \"\$@\"" sh "$@" 9>&-
}

start_slurmdbd() {
    if ! alive "$STATE/run/slurmdbd.pid" slurmdbd; then
        as_slurmctl slurmdbd || fail "slurmdbd did not start"
        STARTED+=(slurmdbd)
    fi
    wait_for "slurmdbd on $CTL_IP:6819" tcp_open "$CTL_IP" 6819
}

start_slurmctld() {
    if ! alive "$STATE/run/slurmctld.pid" slurmctld; then
        as_slurmctl slurmctld -f "$CONF" || fail "slurmctld did not start"
        STARTED+=(slurmctld)
    fi
    wait_for "slurmctld (scontrol ping)" bash -c 'scontrol ping | grep -q "is UP"'
}

# ---------------------------------------------------------------- network
setup_bridge() {
    ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
    ip -4 addr show dev "$BRIDGE" | grep -q "inet $CTL_IP/" || ip addr add "$CTL_IP/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
}

# One netns per node with a veth into the bridge. No default route: nothing leaves the bridge.
setup_node_net() {
    local i=$1 ns=${NS_PREFIX}n$1 veth=${NS_PREFIX}n$1v
    [[ -e /run/netns/$ns ]] || ip netns add "$ns"
    if ! ip -n "$ns" -4 addr show dev eth0 2>/dev/null | grep -q "inet $(node_ip "$i")/"; then
        ip link del "$veth" 2>/dev/null || true
        ip -n "$ns" link del eth0 2>/dev/null || true
        ip link add "$veth" type veth peer name eth0 netns "$ns"
        ip link set "$veth" master "$BRIDGE" up
        ip -n "$ns" addr add "$(node_ip "$i")/24" dev eth0
        ip -n "$ns" link set eth0 up
    fi
    ip -n "$ns" link set lo up
}

# ---------------------------------------------------------------- nodes
start_slurmd() {
    local i=$1 node=n$1 ns=${NS_PREFIX}n$1 d=$STATE/nodes/n$1 g
    alive "$STATE/run/slurmd-$node.pid" slurmd && return 0
    mkdir -p "$d/spool" "$d/dev"
    for g in 0 1 2 3; do ln -sfn /dev/null "$d/dev/nvidia$g"; done   # fake GPUs (char devices)
    # Node-local /tmp, emptied like on a reboot, unless processes still live in the node.
    if [[ -z $(ip netns pids "$ns" 2>/dev/null) ]]; then rm -rf "$d/tmp"; fi
    install -d -m 1777 "$d/tmp"
    # NOT `ip netns exec`: it remounts /sys, hides /sys/fs/cgroup, and slurmd dies.
    # unshare --mount makes the binds private to this node (propagation private).
    nsenter --net="/run/netns/$ns" unshare --uts --mount sh -c \
        "hostname '$node' && mount --bind '$HOSTS' /etc/hosts && mount --bind '$d/tmp' /tmp && exec slurmd -N '$node' -f '$CONF'" 9>&- ||
        fail "slurmd $node did not start (see $STATE/log/slurmd-$node.log)"
    STARTED+=("slurmd-$node")
}

# ---------------------------------------------------------------- start everything
# The bridge first: until 10.199.0.1 is a local address, connections to it leave the
# machine through the default route (here a proxy answers them, and Slurm reads garbage).
setup_bridge
start_munge
start_mariadb
start_slurmdbd
start_slurmctld
SLURMD_T0=$(now)
for ((i = 1; i <= N; i++)); do
    setup_node_net "$i"
    start_slurmd "$i"
done

# ---------------------------------------------------------------- wait until usable
# node_states: "name state" per node (compact state; '*' = not responding).
node_states() { sinfo -h -N -p debug -o '%N %t' 2>/dev/null; }
all_nodes() {   # all_nodes REGEX: every node's state matches
    local states
    states=$(node_states) || return 1
    [[ $(grep -c . <<<"$states") == "$N" ]] || return 1
    ! grep -Ev " ($1)\$" <<<"$states" | grep -q .
}
wait_for "all $N nodes to register" all_nodes 'idle|mix|alloc|comp|drain|drng|resv|plnd'
# A restarted slurmd has registered once its SlurmdStartTime is new (slurmctld may not
# have noticed that the old one died: the node looked fine all along).
registered_since() {   # registered_since NODE EPOCH
    local t
    t=$(scontrol -o show node "$1" | grep -o 'SlurmdStartTime=[^ ]*') || return 1
    (($(date -d "${t#*=}" +%s) >= $2))
}
for started in "${STARTED[@]}"; do
    [[ $started == slurmd-* ]] || continue
    wait_for "${started#slurmd-} to register" registered_since "${started#slurmd-}" "${SLURMD_T0%.*}"
done

# Nodes drained by an earlier run (e.g. "Kill task failed" under linuxproc) come back.
for node in $(sinfo -h -N -p debug -t drain,drng,fail -o '%N' 2>/dev/null); do
    scontrol update NodeName="$node" State=RESUME || true
done

CTLD_STARTED=0
[[ " ${STARTED[*]} " == *" slurmctld "* ]] && CTLD_STARTED=1
if ((CTLD_STARTED)); then
    # A restarted slurmctld recovers the jobs of a killed cluster as RUNNING: start clean.
    leftovers=$(squeue -h -o '%i' 2>/dev/null | sort -u | tr '\n' ' ')
    if [[ -n ${leftovers// /} ]]; then
        log "cancelling jobs left from a previous run: $leftovers"
        # shellcheck disable=SC2086
        scancel $leftovers || true
    fi
fi

# Test with a real job on all nodes, unless the cluster was already running and has jobs
# (a second run must not disturb them, nor wait behind them).
if ((CTLD_STARTED)) || all_nodes 'idle'; then
    wait_for "all $N nodes idle" all_nodes 'idle'
    # Through the default partition. --chdir=/: the caller's cwd may be under /tmp, which
    # is node-local and absent on the nodes.
    out=$(timeout "$(( $(time_left) > 5 ? $(time_left) : 5 ))" \
        srun -N "$N" --chdir=/ -t 1 --quiet hostname 2>&1 | sort | tr '\n' ' ') ||
        fail "srun -N$N hostname failed: $out"
    [[ $out == "${NODES[*]} " ]] || fail "srun -N$N hostname printed '$out', expected '${NODES[*]}'"
    checked="all idle, srun -N$N hostname ok"
else
    wait_for "all $N nodes to respond" all_nodes 'idle|mix|alloc|comp|resv|plnd'
    checked="all respond (jobs running: srun test skipped)"
fi
if ((${#STARTED[@]})); then
    log "started: ${STARTED[*]}"
    log "cluster up: $N nodes (${NODES[*]}) $checked after $(elapsed "$T1")s" \
        "(packages check/install ${T_PKG}s, total $(elapsed "$T0")s)"
else
    log "already up: $N nodes (${NODES[*]}) $checked; checked in $(elapsed "$T0")s"
fi

# ---------------------------------------------------------------- env file (last: it means "up")
tmp=$(mktemp "$STATE/env.XXXXXX")
cat >"$tmp" <<EOF
# Written by scripts/slurm-cluster-up.sh; removed by slurm-cluster-down.sh.
# Its presence means the local test Slurm cluster is up.
export HPCTUNE_TEST_SLURM=1
export HPCTUNE_TEST_NODES=$N
export HPCTUNE_SLURM_STATE=$STATE
export SLURM_CONF=$CONF
export HPCTUNE_SLURM_NODES="${NODES[*]}"
export HPCTUNE_SLURM_NODELIST="$NODELIST"
export HPCTUNE_SLURM_NODE_IPS="${IPS[*]}"
export HPCTUNE_SLURM_CONTROLLER_IP=$CTL_IP
export HPCTUNE_SLURM_PARTITIONS="debug high"
export HPCTUNE_SLURM_DEFAULT_PARTITION=debug
export HPCTUNE_SLURM_HIGH_PARTITION=high
export HPCTUNE_SLURM_CPUS_PER_NODE=4
export HPCTUNE_SLURM_MEM_PER_NODE_MB=6000
export HPCTUNE_SLURM_GPUS_PER_NODE=4
EOF
chmod 0644 "$tmp"
mv -f "$tmp" "$STATE/env"
