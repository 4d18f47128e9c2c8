#!/usr/bin/env bash
# Stop the one-node SLURM cluster started by up.sh: cancel every job, then stop
# slurmd, slurmctld and munged. Idempotent; succeeds when nothing is running.
set -euo pipefail

# stop NAME: SIGTERM the daemon(s) with that exact name and wait (max 20 s),
# then SIGKILL whatever is left.
stop() {
  local pids i
  pids=$(pgrep -x "$1") || return 0
  kill $pids 2>/dev/null || true
  for i in $(seq 100); do
    pgrep -x "$1" >/dev/null || return 0
    sleep 0.2
  done
  kill -9 $(pgrep -x "$1") 2>/dev/null || true
}

# Cancel all jobs while the controller is still there, give steps a moment.
if pgrep -x slurmctld >/dev/null && command -v scancel >/dev/null; then
  ids=$(timeout 10 squeue -h -o %A 2>/dev/null || true)
  [[ -z $ids ]] || timeout 10 scancel --full $ids 2>/dev/null || true
  for i in $(seq 20); do
    [[ -z $(timeout 5 squeue -h -t R,CG 2>/dev/null) ]] && break
    sleep 0.5
  done
fi
stop slurmd
stop slurmctld
stop munged
echo "slurm down"
