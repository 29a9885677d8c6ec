#!/usr/bin/env bash
# Start a single-node SLURM cluster on loopback (for the submitit integration tests), installing the Debian
# packages it needs first. Idempotent: daemons this script started earlier and that still run are kept.
#
#   sudo bash scripts/slurm/start.sh            # install if missing, start, wait for an idle node
#   sudo bash scripts/slurm/stop.sh             # stop exactly what start.sh started
#
# Runs as root, without prompts, on Debian/Ubuntu without systemd. Daemons, in start order:
#   munged (as user munge) -> mariadbd + slurmdbd (accounting, so that `sacct` works) -> slurmctld -> slurmd
# Everything lives under $SLURM_ROOT (config in etc/, state/, spool/, log/, run/, mysql/);
# /etc/slurm/{slurm,slurmdbd,gres}.conf become symlinks into $SLURM_ROOT/etc (an existing regular file is
# moved to *.bak.<epoch>) so that plain `sinfo`/`sbatch` and submitit find the cluster.
# `name pid` lines of the daemons it started go to $SLURM_ROOT/run/pids (read by stop.sh); what this run
# started or kept goes to $SLURM_ROOT/run/last-start (`started|kept|external NAME PID`).
#
# Knobs (environment):
#   SLURM_ROOT           /tmp/jamba-ablate-slurm
#   SLURM_ACCOUNTING     1     0: no MariaDB/slurmdbd (then `sacct` fails and submitit cannot see a job that
#                              ends without a result, e.g. a cancelled one: its result() never returns)
#   SLURM_NODE           `hostname -s` if it resolves, else localhost
#   SLURM_CPUS           max(4, hardware). More CPUs than cores (SlurmdParameters=config_overrides) lets a
#                        4-task array run in one wave on a 2-core CI machine; test jobs are light.
#   SLURM_MEM_MB         hardware (slurmd -C)
#   SLURM_GPUS           0     N>0: N fake GPUs (gres, /dev/null clones under $SLURM_ROOT/dev)
#   SLURM_CRED_EXPIRE    10    seconds; also the wait before a requeued job may start again (default 120)
#   SLURM_KILL_WAIT      5
#   SLURM_MIN_JOB_AGE    3600  finished jobs stay visible to squeue/scontrol this long
#   SLURM_SCHED_PARAMS   batch_sched_delay=0,sched_interval=5,bf_interval=5  (a job submitted to an idle node
#                              starts at once; a requeued job starts <=5 s after its begin time, not 30-60 s)
#   SLURM_DB_PORT        3307  MariaDB's loopback port
#   SLURM_WAIT_S         60    how long to wait for each daemon / for the node to be idle
# Exit status: 0 up; 1 a daemon failed (its log tail is printed); 2 cannot run here (not root, no apt-get,
# packages cannot be installed).
set -euo pipefail

SLURM_ROOT=${SLURM_ROOT:-/tmp/jamba-ablate-slurm}
SLURM_ACCOUNTING=${SLURM_ACCOUNTING:-1}
SLURM_GPUS=${SLURM_GPUS:-0}
SLURM_CRED_EXPIRE=${SLURM_CRED_EXPIRE:-10}
SLURM_KILL_WAIT=${SLURM_KILL_WAIT:-5}
SLURM_MIN_JOB_AGE=${SLURM_MIN_JOB_AGE:-3600}
SLURM_SCHED_PARAMS=${SLURM_SCHED_PARAMS:-batch_sched_delay=0,sched_interval=5,bf_interval=5}
SLURM_DB_PORT=${SLURM_DB_PORT:-3307}
SLURM_WAIT_S=${SLURM_WAIT_S:-60}

ETC=$SLURM_ROOT/etc
RUN=$SLURM_ROOT/run
LOG=$SLURM_ROOT/log
DB_DIR=$SLURM_ROOT/mysql
DB_SOCK=$RUN/mysqld.sock
PIDS_FILE=$RUN/pids
LAST_START=$RUN/last-start
# Daemons and clients read this config; /etc/slurm/slurm.conf is only a convenience for other shells.
export SLURM_CONF=$ETC/slurm.conf
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

T0=$(date +%s%N)
log() { printf '[slurm/start %6.1fs] %s\n' "$(( ($(date +%s%N) - T0) / 1000000 ))e-3" "$*"; }
fail() {  # fail CODE MESSAGE [LOGFILE...]: print the message and the logs' tails, exit CODE
    local code=$1 msg=$2 f
    shift 2
    for f in "$@"; do
        if [ -s "$f" ]; then
            printf -- '----- last lines of %s -----\n' "$f" >&2
            tail -n 25 "$f" >&2
            printf -- '-----\n' >&2
        fi
    done
    printf 'slurm/start.sh: ERROR: %s\n' "$msg" >&2
    if [ -s "$PIDS_FILE" ]; then
        printf 'slurm/start.sh: daemons started so far are in %s; scripts/slurm/stop.sh stops them\n' \
            "$PIDS_FILE" >&2
    fi
    exit "$code"
}

case $SLURM_ACCOUNTING in 0|1) ;; *) fail 2 "SLURM_ACCOUNTING must be 0 or 1, not '$SLURM_ACCOUNTING'" ;; esac
for v in SLURM_GPUS SLURM_CRED_EXPIRE SLURM_KILL_WAIT SLURM_MIN_JOB_AGE SLURM_DB_PORT SLURM_WAIT_S; do
    [[ ${!v} =~ ^[0-9]+$ ]] || fail 2 "$v must be a non-negative integer, not '${!v}'"
done
[ "$(id -u)" -eq 0 ] || fail 2 "must run as root (it installs packages and starts daemons as root); try: sudo bash $0"
[ "$(uname -s)" = Linux ] || fail 2 "Linux only"

# ---------------------------------------------------------------------------------------------- packages
PKGS=(munge slurmctld slurmd slurm-client)
if [ "$SLURM_ACCOUNTING" = 1 ]; then
    PKGS+=(slurmdbd slurm-wlm-mysql-plugin mariadb-server mariadb-client)
fi
missing=()
for p in "${PKGS[@]}"; do
    if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" != installed ]; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || fail 2 "apt-get not found (needs Debian/Ubuntu); missing packages: ${missing[*]}"
    created_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        # Keep the packages' postinst from starting system-wide services (init scripts) while installing.
        log "creating a temporary /usr/sbin/policy-rc.d (exit 101) so postinst starts no services"
        printf '#!/bin/sh\n# temporary, from scripts/slurm/start.sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        created_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt_install() {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            "${missing[@]}"
    }
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        log "apt lists are empty: apt-get update"
        apt-get update -q || true
    fi
    log "installing: ${missing[*]} (apt-get install --no-install-recommends)"
    if ! apt_install; then
        log "install failed: apt-get update, then retry"
        if ! { apt-get update -q && apt_install; }; then
            fail 2 "could not install ${missing[*]} with apt-get"
        fi
    fi
    if [ -n "$created_policy" ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
    log "installed"
else
    log "packages present: ${PKGS[*]}"
fi

mkdir -p "$ETC" "$RUN" "$LOG" "$SLURM_ROOT/state" "$SLURM_ROOT/spool"
chmod 0755 "$SLURM_ROOT"

# ------------------------------------------------------------------------------------ recorded daemons
ORDER=(munged mariadbd slurmdbd slurmctld slurmd)
declare -A PID=()
if [ -f "$PIDS_FILE" ]; then
    while read -r name pid _; do
        [ -n "${name:-}" ] && [[ ${pid:-} =~ ^[0-9]+$ ]] && PID[$name]=$pid
    done < "$PIDS_FILE"
fi
: > "$LAST_START"

alive() {  # alive PID COMM: the process exists, is not a zombie (PID 1 reaps slowly) and runs COMM
    local pid=$1 comm=$2 state
    [ -n "$pid" ] && [ -r "/proc/$pid/status" ] || return 1
    state=$(awk '/^State:/ {print $2; exit}' "/proc/$pid/status" 2>/dev/null) || return 1
    case $state in Z|X|"") return 1 ;; esac
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ]
}
write_pids() {
    local n tmp=$PIDS_FILE.tmp
    : > "$tmp"
    for n in "${ORDER[@]}"; do
        if [ -n "${PID[$n]:-}" ]; then printf '%s %s\n' "$n" "${PID[$n]}" >> "$tmp"; fi
    done
    mv -f "$tmp" "$PIDS_FILE"
}
kept() {  # kept NAME: true (and noted) if the recorded daemon still runs
    local n=$1
    if alive "${PID[$n]:-}" "$n"; then
        log "$n already running (pid ${PID[$n]})"
        echo "kept $n ${PID[$n]}" >> "$LAST_START"
        return 0
    fi
    if [ -n "${PID[$n]:-}" ]; then
        log "$n recorded as pid ${PID[$n]} is gone"
        unset "PID[$n]"
        write_pids
    fi
    return 1
}
started() {  # started NAME PID
    PID[$1]=$2
    write_pids
    echo "started $1 $2" >> "$LAST_START"
    log "$1 started (pid $2)"
}
read_pidfile() { local p=; if [ -f "$1" ]; then p=$(tr -dc '0-9' 2>/dev/null < "$1") || true; fi; echo "$p"; }
wait_for() {  # wait_for WHAT NAME PIDFILE|PID LOGFILE CMD...: run CMD until it succeeds; fail if NAME dies
    local what=$1 name=$2 pidsrc=$3 logfile=$4 deadline pid
    shift 4
    deadline=$(( $(date +%s) + SLURM_WAIT_S ))
    while ! "$@" >/dev/null 2>&1; do
        if [[ $pidsrc =~ ^[0-9]+$ ]]; then  # our own child: may not have exec'd yet, so skip the comm check
            pid=$pidsrc
            alive "$pid" "$(cat "/proc/$pid/comm" 2>/dev/null)" || fail 1 "$name (pid $pid) died while waiting for $what" "$logfile"
        else
            pid=$(read_pidfile "$pidsrc")
        fi
        if [ -n "$pid" ] && ! alive "$pid" "$name" && [[ ! $pidsrc =~ ^[0-9]+$ ]]; then
            fail 1 "$name (pid $pid) died while waiting for $what" "$logfile"
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            fail 1 "timed out after ${SLURM_WAIT_S}s waiting for $what" "$logfile"
        fi
        sleep 0.1
    done
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ------------------------------------------------------------------------------------------ config
if [ -z "${SLURM_NODE:-}" ]; then
    SLURM_NODE=$(hostname -s 2>/dev/null || true)
    if [ -z "$SLURM_NODE" ] || ! getent hosts "$SLURM_NODE" >/dev/null 2>&1; then SLURM_NODE=localhost; fi
fi
hw=$(slurmd -C 2>/dev/null | head -n 1)
hw_val() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<< "$hw"; }
HW_CPUS=$(hw_val CPUs); HW_MEM=$(hw_val RealMemory)
HW_CPUS=${HW_CPUS:-$(nproc)}; HW_MEM=${HW_MEM:-1024}
SLURM_CPUS=${SLURM_CPUS:-$(( HW_CPUS > 4 ? HW_CPUS : 4 ))}
SLURM_MEM_MB=${SLURM_MEM_MB:-$HW_MEM}
[[ $SLURM_CPUS =~ ^[1-9][0-9]*$ ]] || fail 2 "SLURM_CPUS must be a positive integer, not '$SLURM_CPUS'"
[[ $SLURM_MEM_MB =~ ^[1-9][0-9]*$ ]] || fail 2 "SLURM_MEM_MB must be a positive integer, not '$SLURM_MEM_MB'"
overrides='#SlurmdParameters=config_overrides'
if [ "$SLURM_CPUS" = "$HW_CPUS" ] && [ "$SLURM_MEM_MB" = "$HW_MEM" ]; then
    node_hw=$(sed -n 's/.*\(CPUs=.*RealMemory=[0-9]*\).*/\1/p' <<< "$hw")
fi
if [ -z "${node_hw:-}" ]; then
    node_hw="CPUs=$SLURM_CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$SLURM_CPUS ThreadsPerCore=1 RealMemory=$SLURM_MEM_MB"
    overrides='SlurmdParameters=config_overrides'
fi
gres_types='#GresTypes=gpu'; node_gres=
if [ "$SLURM_GPUS" -gt 0 ]; then
    gres_types='GresTypes=gpu'; node_gres=" Gres=gpu:$SLURM_GPUS"
fi
if [ "$SLURM_ACCOUNTING" = 1 ]; then acct_type=accounting_storage/slurmdbd; else acct_type=accounting_storage/none; fi

slurm_conf="# Generated by scripts/slurm/start.sh; rewritten on the next start while the cluster is down.
ClusterName=testcluster
SlurmctldHost=$SLURM_NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=$SLURM_CRED_EXPIRE
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=$acct_type
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
$gres_types
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=$SLURM_SCHED_PARAMS
ReturnToService=2
EnforcePartLimits=ALL
KillWait=$SLURM_KILL_WAIT
MinJobAge=$SLURM_MIN_JOB_AGE
$overrides
StateSaveLocation=$SLURM_ROOT/state
SlurmdSpoolDir=$SLURM_ROOT/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$SLURM_NODE NodeAddr=127.0.0.1 $node_hw$node_gres State=UNKNOWN
PartitionName=debug Nodes=$SLURM_NODE Default=YES MaxTime=INFINITE State=UP
"
slurmdbd_conf="# Generated by scripts/slurm/start.sh
AuthType=auth/munge
DbdAddr=127.0.0.1
DbdHost=$SLURM_NODE
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$SLURM_DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
"
gres_conf="# Generated by scripts/slurm/start.sh"
if [ "$SLURM_GPUS" -gt 0 ]; then
    mkdir -p "$SLURM_ROOT/dev"
    for (( i = 0; i < SLURM_GPUS; i++ )); do
        # gres needs a character device per GPU; a /dev/null clone is enough for scheduling tests
        [ -c "$SLURM_ROOT/dev/gpu$i" ] || mknod -m 666 "$SLURM_ROOT/dev/gpu$i" c 1 3
    done
    if [ "$SLURM_GPUS" -eq 1 ]; then files=$SLURM_ROOT/dev/gpu0; else files="$SLURM_ROOT/dev/gpu[0-$((SLURM_GPUS - 1))]"; fi
    gres_conf+="
NodeName=$SLURM_NODE Name=gpu File=$files"
fi

running=
for n in slurmctld slurmd slurmdbd; do
    if alive "${PID[$n]:-}" "$n"; then running+=" $n"; fi
done
install_conf() {  # install_conf FILE CONTENT MODE
    local f=$1 content=$2 mode=$3
    if [ -f "$f" ] && [ "$(cat "$f")" = "${content%$'\n'}" ]; then return 0; fi
    if [ -n "$running" ] && [ -f "$f" ]; then
        log "WARNING: settings differ from the running cluster's $(basename "$f"); kept the running one" \
            "(run scripts/slurm/stop.sh first to apply new settings)"
        return 0
    fi
    printf '%s' "$content" > "$f.tmp"
    chmod "$mode" "$f.tmp"
    mv -f "$f.tmp" "$f"
    log "wrote $f"
}
link_conf() {  # link_conf NAME: /etc/slurm/NAME -> $ETC/NAME
    local dst=/etc/slurm/$1
    mkdir -p /etc/slurm
    if [ -L "$dst" ] && [ "$(readlink "$dst")" = "$ETC/$1" ]; then return 0; fi
    if [ -e "$dst" ] && [ ! -L "$dst" ]; then
        log "moving the existing $dst to $dst.bak.$(date +%s)"
        mv "$dst" "$dst.bak.$(date +%s)"
    fi
    ln -sfn "$ETC/$1" "$dst"
    log "linked $dst -> $ETC/$1"
}
install_conf "$ETC/slurm.conf" "$slurm_conf" 0644
link_conf slurm.conf
if [ "$SLURM_GPUS" -gt 0 ] || [ -f "$ETC/gres.conf" ]; then install_conf "$ETC/gres.conf" "$gres_conf" 0644; fi
if [ "$SLURM_GPUS" -gt 0 ]; then
    link_conf gres.conf
elif [ -L /etc/slurm/gres.conf ] && [ "$(readlink /etc/slurm/gres.conf)" = "$ETC/gres.conf" ] && [ -z "$running" ]; then
    rm -f /etc/slurm/gres.conf  # left by an earlier SLURM_GPUS=N start
    log "removed /etc/slurm/gres.conf (no GPUs configured)"
fi
if [ "$SLURM_ACCOUNTING" = 1 ]; then
    install_conf "$ETC/slurmdbd.conf" "$slurmdbd_conf" 0600
    link_conf slurmdbd.conf
fi

# ------------------------------------------------------------------------------------------ munged
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    install -d -o munge -g munge -m 0700 /etc/munge
    mungekey --create --keyfile=/etc/munge/munge.key >/dev/null 2>&1 \
        || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
fi
install -d -o munge -g munge -m 0755 /run/munge
if ! kept munged; then
    if munge_ok; then
        log "munged: using one that answers on /run/munge but was not started by this script (not recorded)"
        echo "external munged -" >> "$LAST_START"
    else
        log "starting munged"
        rm -f /run/munge/munged.pid
        runuser -u munge -- /usr/sbin/munged </dev/null >>"$LOG/munged.out" 2>&1 \
            || fail 1 "munged did not start" "$LOG/munged.out" /var/log/munge/munged.log
        wait_for "munged to answer" munged /run/munge/munged.pid /var/log/munge/munged.log munge_ok
        pid=$(read_pidfile /run/munge/munged.pid)
        alive "$pid" munged || fail 1 "munged answers but /run/munge/munged.pid has no live munged"
        started munged "$pid"
    fi
fi

# -------------------------------------------------------------------------------- mariadbd, slurmdbd
if [ "$SLURM_ACCOUNTING" = 1 ]; then
    if ! kept mariadbd; then
        if [ ! -d "$DB_DIR/mysql" ]; then
            log "initialising the MariaDB data directory $DB_DIR (mariadb-install-db)"
            rm -rf "${DB_DIR:?}"
            mariadb-install-db --no-defaults --user=root --datadir="$DB_DIR" --skip-test-db \
                --auth-root-authentication-method=socket >"$LOG/mariadb-install-db.log" 2>&1 \
                || fail 1 "mariadb-install-db failed" "$LOG/mariadb-install-db.log"
        fi
        log "starting mariadbd on 127.0.0.1:$SLURM_DB_PORT"
        rm -f "$RUN/mariadbd.pid"
        setsid nohup mariadbd --no-defaults --user=root --datadir="$DB_DIR" --socket="$DB_SOCK" \
            --port="$SLURM_DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
            --pid-file="$RUN/mariadbd.pid" --log-error="$LOG/mariadbd.err" --skip-log-bin \
            --innodb-buffer-pool-size=1024M --innodb-log-file-size=64M --innodb-lock-wait-timeout=900 \
            </dev/null >/dev/null 2>&1 &
        # $! is mariadbd itself: setsid only forks when the caller leads a process group, and a script's
        # background job does not (no job control).
        pid=$!
        wait_for "mariadbd to accept connections" mariadbd "$pid" "$LOG/mariadbd.err" \
            mariadb-admin --no-defaults --socket="$DB_SOCK" ping
        [ "$(read_pidfile "$RUN/mariadbd.pid")" = "$pid" ] || log "WARNING: $RUN/mariadbd.pid does not hold $pid"
        alive "$pid" mariadbd || fail 1 "mariadbd answers but $RUN/mariadbd.pid has no live mariadbd" "$LOG/mariadbd.err"
        started mariadbd "$pid"
        mariadb --no-defaults --socket="$DB_SOCK" -e "
            CREATE DATABASE IF NOT EXISTS slurm_acct_db;
            CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
            CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
            FLUSH PRIVILEGES;" || fail 1 "could not create the slurm database user" "$LOG/mariadbd.err"
    fi
    if ! kept slurmdbd; then
        port_open 6819 && fail 1 "127.0.0.1:6819 is taken by a slurmdbd this script did not start; stop it first"
        log "starting slurmdbd"
        rm -f "$RUN/slurmdbd.pid"
        slurmdbd </dev/null >>"$LOG/slurmdbd.out" 2>&1 || fail 1 "slurmdbd did not start" "$LOG/slurmdbd.log" "$LOG/slurmdbd.out"
        # slurmdbd writes its pid file ~1 s before it listens; slurmctld dies if it cannot reach it (F2)
        wait_for "slurmdbd to listen on 127.0.0.1:6819" slurmdbd "$RUN/slurmdbd.pid" "$LOG/slurmdbd.log" port_open 6819
        pid=$(read_pidfile "$RUN/slurmdbd.pid")
        alive "$pid" slurmdbd || fail 1 "slurmdbd listens but $RUN/slurmdbd.pid has no live slurmdbd" "$LOG/slurmdbd.log"
        started slurmdbd "$pid"
    fi
fi

# ------------------------------------------------------------------------------- slurmctld, slurmd
if ! kept slurmctld; then
    port_open 6817 && fail 1 "127.0.0.1:6817 is taken by a slurmctld this script did not start; stop it first"
    log "starting slurmctld"
    rm -f "$RUN/slurmctld.pid"
    slurmctld </dev/null >>"$LOG/slurmctld.out" 2>&1 || fail 1 "slurmctld did not start" "$LOG/slurmctld.log" "$LOG/slurmctld.out"
    wait_for "slurmctld to answer" slurmctld "$RUN/slurmctld.pid" "$LOG/slurmctld.log" scontrol ping
    pid=$(read_pidfile "$RUN/slurmctld.pid")
    alive "$pid" slurmctld || fail 1 "slurmctld answers but $RUN/slurmctld.pid has no live slurmctld" "$LOG/slurmctld.log"
    started slurmctld "$pid"
fi
if ! kept slurmd; then
    port_open 6818 && fail 1 "127.0.0.1:6818 is taken by a slurmd this script did not start; stop it first"
    log "starting slurmd -N $SLURM_NODE"
    rm -f "$RUN/slurmd.pid"
    slurmd -N "$SLURM_NODE" </dev/null >>"$LOG/slurmd.out" 2>&1 || fail 1 "slurmd did not start" "$LOG/slurmd.log" "$LOG/slurmd.out"
    wait_for "slurmd's pid file" slurmd "$RUN/slurmd.pid" "$LOG/slurmd.log" test -s "$RUN/slurmd.pid"
    pid=$(read_pidfile "$RUN/slurmd.pid")
    started slurmd "$pid"
fi

# ------------------------------------------------------------------------------------ wait until usable
node_state() { sinfo -h -N -n "$SLURM_NODE" -o %t 2>/dev/null | head -n 1; }
deadline=$(( $(date +%s) + SLURM_WAIT_S ))
resumed=
while :; do
    for n in slurmctld slurmd; do
        alive "${PID[$n]}" "$n" || fail 1 "$n (pid ${PID[$n]}) died while waiting for the node" "$LOG/$n.log"
    done
    state=$(node_state)
    case $state in
        idle|mix|alloc|comp) break ;;  # usable (mix/alloc/comp: jobs from an earlier session still run)
        drain|drng|inval|down|fail|failg)
            if [ -z "$resumed" ]; then
                log "node $SLURM_NODE is '$state' (left over from an earlier config): scontrol update state=resume"
                scontrol update nodename="$SLURM_NODE" state=resume || true
                resumed=1
            fi ;;
    esac
    if [ "$(date +%s)" -ge "$deadline" ]; then
        reason=$(sinfo -h -N -n "$SLURM_NODE" -o '%t %E' 2>/dev/null || true)
        fail 1 "node $SLURM_NODE not idle after ${SLURM_WAIT_S}s (state: ${reason:-unknown})" "$LOG/slurmd.log" "$LOG/slurmctld.log"
    fi
    sleep 0.1
done
log "node $SLURM_NODE is $state"
if [ "$SLURM_ACCOUNTING" = 1 ]; then
    wait_for "sacct to work" slurmdbd "$RUN/slurmdbd.pid" "$LOG/slurmdbd.log" sacct -n -X
    log "sacct works"
fi

# ------------------------------------------------------------------------------------------- summary
echo
echo "SLURM is up: cluster testcluster, node $SLURM_NODE ($(sinfo -h -N -n "$SLURM_NODE" -o '%c CPUs, %m MB' 2>/dev/null)), partition debug"
if [ "$SLURM_ACCOUNTING" = 1 ]; then echo "  accounting: slurmdbd + MariaDB (127.0.0.1:$SLURM_DB_PORT)"; else echo "  accounting: off (no sacct)"; fi
for n in "${ORDER[@]}"; do
    if [ -n "${PID[$n]:-}" ]; then printf '  %-10s pid %s\n' "$n" "${PID[$n]}"; fi
done
if grep -q '^external munged' "$LAST_START"; then echo "  munged     (not started here, not recorded)"; fi
echo "  config:     $ETC/slurm.conf (SLURM_CONF; /etc/slurm/slurm.conf links to it)"
echo "  logs:       $LOG"
echo "  pids:       $PIDS_FILE"
echo "  stop with:  bash $(dirname "$0")/stop.sh${SLURM_ROOT:+  (SLURM_ROOT=$SLURM_ROOT)}"
log "done"
