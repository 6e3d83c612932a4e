#!/usr/bin/env bash
# Stop the cluster started by start-slurm.sh: cancel jobs, then stop the
# daemons it started, by the PIDs in their pid files (never by name).
set -uo pipefail
SLURM_BASE="${SLURM_BASE:-/tmp/calpipe-slurm}"
export SLURM_CONF="$SLURM_BASE/etc/slurm.conf"

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
pidof_file() { [ -s "$SLURM_BASE/run/$1.pid" ] && cat "$SLURM_BASE/run/$1.pid"; }

ctld=$(pidof_file slurmctld || true)
if alive "$ctld"; then
  # cancel every job so that no slurmstepd / job process outlives slurmd
  scancel --full --quiet --user=root 2>/dev/null || true
  scancel --full --quiet $(squeue -h -o %i 2>/dev/null) 2>/dev/null || true
  for i in $(seq 1 40); do
    [ -z "$(squeue -h -t RUNNING,COMPLETING,PENDING -o %i 2>/dev/null)" ] && break
    sleep 0.25
  done
fi

stop() {  # stop <name>: TERM, wait up to 10 s, then KILL
  local pid; pid=$(pidof_file "$1" || true)
  if ! alive "$pid"; then echo "[stop-slurm] $1 not running"; return; fi
  kill -TERM "$pid"
  for i in $(seq 1 40); do alive "$pid" || break; sleep 0.25; done
  if alive "$pid"; then echo "[stop-slurm] $1 ($pid) ignored TERM, KILL"; kill -KILL "$pid"; fi
  echo "[stop-slurm] stopped $1 ($pid)"
}
stop slurmd
stop slurmctld
stop slurmdbd
stop munged
stop mariadbd
rm -f "$SLURM_BASE"/run/*.pid
# remove the /etc/slurm/slurm.conf symlink if it is ours
if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$SLURM_CONF" ]; then
  rm -f /etc/slurm/slurm.conf
fi
if [ -L /etc/slurm/slurmdbd.conf ] && [ "$(readlink /etc/slurm/slurmdbd.conf)" = "$SLURM_BASE/etc/slurmdbd.conf" ]; then
  rm -f /etc/slurm/slurmdbd.conf
fi
