#!/usr/bin/env bash
# Stop exactly the daemons scripts/slurm/start.sh started (the `name pid` lines of $SLURM_ROOT/run/pids).
#
#   sudo bash scripts/slurm/stop.sh
#
# First cancels this cluster's unfinished jobs (waits up to 15 s for them to leave the queue, so that no
# slurmstepd or job process outlives slurmd), then sends SIGTERM in the order slurmd, slurmctld, slurmdbd,
# mariadbd, munged, each only if /proc/PID/comm still names that daemon, and SIGKILL after 20 s.
# A zombie counts as stopped (PID 1 here reaps orphans slowly, so `ps` may show them as Z for a second or
# two). No pkill/killall. Without a pid file it prints "nothing to stop" and exits 0. Packages, config,
# state and logs stay; the next start.sh reuses them.
set -euo pipefail

SLURM_ROOT=${SLURM_ROOT:-/tmp/jamba-ablate-slurm}
PIDS_FILE=$SLURM_ROOT/run/pids
export SLURM_CONF=$SLURM_ROOT/etc/slurm.conf
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

T0=$(date +%s%N)
log() { printf '[slurm/stop %6.1fs] %s\n' "$(( ($(date +%s%N) - T0) / 1000000 ))e-3" "$*"; }

if [ ! -f "$PIDS_FILE" ]; then
    echo "slurm/stop.sh: nothing to stop ($PIDS_FILE not found)"
    exit 0
fi

declare -A PID=()
while read -r name pid _; do
    if [ -n "${name:-}" ] && [[ ${pid:-} =~ ^[0-9]+$ ]]; then PID[$name]=$pid; fi
done < "$PIDS_FILE"

alive() {  # alive PID COMM: exists, not a zombie, runs COMM
    local pid=$1 comm=$2 state
    [ -n "$pid" ] && [ -r "/proc/$pid/status" ] || return 1
    state=$(awk '/^State:/ {print $2; exit}' "/proc/$pid/status" 2>/dev/null) || return 1
    case $state in Z|X|"") return 1 ;; esac
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ]
}

# ------------------------------------------------------------------------------ cancel this cluster's jobs
if alive "${PID[slurmctld]:-}" slurmctld && [ -f "$SLURM_CONF" ]; then
    mapfile -t jobs < <(squeue -h -o %A 2>/dev/null | sort -u)
    if [ ${#jobs[@]} -gt 0 ]; then
        log "cancelling ${#jobs[@]} unfinished job(s): ${jobs[*]}"
        scancel "${jobs[@]}" || true
        deadline=$(( $(date +%s) + 15 ))
        while [ -n "$(squeue -h -o %A 2>/dev/null)" ]; do
            if [ "$(date +%s)" -ge "$deadline" ]; then
                log "WARNING: jobs still in the queue after 15 s: $(squeue -h -o '%A %T' 2>/dev/null | tr '\n' ' ')"
                break
            fi
            sleep 0.2
        done
    else
        log "no unfinished jobs"
    fi
fi

# --------------------------------------------------------------------------------------- stop daemons
status=0
for name in slurmd slurmctld slurmdbd mariadbd munged; do
    pid=${PID[$name]:-}
    [ -n "$pid" ] || continue
    if ! alive "$pid" "$name"; then
        if [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$name" ]; then
            log "$name: pid $pid now runs '$(cat "/proc/$pid/comm" 2>/dev/null)', not touching it"
        else
            log "$name (pid $pid) is not running"
        fi
        continue
    fi
    log "stopping $name (pid $pid): SIGTERM"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$(( $(date +%s) + 20 ))
    while alive "$pid" "$name" && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
    if alive "$pid" "$name"; then
        log "$name (pid $pid) still running after 20 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        deadline=$(( $(date +%s) + 5 ))
        while alive "$pid" "$name" && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
        if alive "$pid" "$name"; then
            log "ERROR: $name (pid $pid) survived SIGKILL"
            status=1
            continue
        fi
    fi
    log "$name stopped"
done

if [ "$status" -eq 0 ]; then
    rm -f "$PIDS_FILE"
    log "done (config, state and logs kept under $SLURM_ROOT)"
else
    log "left $PIDS_FILE in place because a daemon is still running"
fi
exit "$status"
