#!/usr/bin/env bash
# calpipe CI (from research/slurm.md, tested there): start a throw-away single-node Slurm cluster on this machine (Debian 12,
# run as root, no systemd needed).  Everything (config, state, logs, pid
# files, munge key + socket) lives under $SLURM_BASE; the only thing written
# outside it is the symlink /etc/slurm/slurm.conf -> $SLURM_BASE/etc/slurm.conf
# (needed by the snakemake slurm plugin, see below).  A system munged, if any,
# is left alone (we run a private one on our own socket).
#
# Usage:  bash start-slurm.sh            # installs packages if missing
#         source "$SLURM_BASE/env.sh"    # sets SLURM_CONF for sinfo/sbatch/...
#
# Env knobs:
#   SLURM_BASE      state dir (default: /tmp/calpipe-slurm)
#   SLURM_AUTH      munge (default) | none   (auth/none needs no munged)
#   SLURM_CPUS      CPUs advertised for the node (default: what slurmd -C
#                   finds; may be set higher, e.g. 8, to run more jobs
#                   concurrently on a 2-core box -- uses config_overrides)
#   SLURM_MEM_MB    RealMemory (default: 90% of what slurmd -C finds)
set -euo pipefail

SLURM_BASE="${SLURM_BASE:-/tmp/calpipe-slurm}"
SLURM_AUTH="${SLURM_AUTH:-munge}"
SLURM_ACCOUNTING=none  # no slurmdbd here: job status comes from squeue
t0=$(date +%s.%N)

log() { printf '[start-slurm %6.1fs] %s\n' "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{print b-a}')" "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "start-slurm.sh: must run as root (SlurmUser=root, apt-get)" >&2
  exit 1
fi

# ---------------------------------------------------------------- packages
need=()
command -v slurmctld >/dev/null || need+=(slurmctld)
command -v slurmd    >/dev/null || need+=(slurmd)
command -v sbatch    >/dev/null || need+=(slurm-client)
if [ "$SLURM_AUTH" = munge ]; then command -v munged >/dev/null || need+=(munge); fi
if [ ${#need[@]} -gt 0 ]; then
  echo "[start-slurm] installing: ${need[*]}"
  # apt-cache policy is empty before the first 'apt-get update'
  if ! apt-cache policy slurmctld 2>/dev/null | grep -q Candidate: ||
     apt-cache policy slurmctld | grep -q 'Candidate: (none)'; then
    apt-get update -qq
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${need[@]}" >/dev/null
fi
log "packages ok: $(slurmctld -V)"

# ---------------------------------------------------------------- refuse double start
for p in slurmctld slurmd munged; do
  pf="$SLURM_BASE/run/$p.pid"
  if [ -s "$pf" ] && kill -0 "$(cat "$pf")" 2>/dev/null; then
    echo "start-slurm.sh: $p already running (pid $(cat "$pf")); run stop-slurm.sh first" >&2
    exit 1
  fi
done

# ---------------------------------------------------------------- dirs
rm -rf "$SLURM_BASE/state" "$SLURM_BASE/log" "$SLURM_BASE/run" "$SLURM_BASE/mysql"
mkdir -p "$SLURM_BASE"/{etc,state/ctld,state/d,log,run,munge}
chmod 755 "$SLURM_BASE" "$SLURM_BASE/run"   # munged: socket dir must be o+x
chmod 700 "$SLURM_BASE/munge"

HOST="$(hostname -s)"
# Slurm needs the node name to resolve; make sure it does.
getent hosts "$HOST" >/dev/null || echo "127.0.0.1 $HOST" >> /etc/hosts

# ---------------------------------------------------------------- node shape
# slurmd -C prints e.g.
#   NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105
hw="$(slurmd -C | head -1)"
get() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$hw"; }
HW_CPUS=$(get CPUs); HW_MEM=$(get RealMemory)
CPUS="${SLURM_CPUS:-$HW_CPUS}"
MEM="${SLURM_MEM_MB:-$(( HW_MEM * 9 / 10 ))}"
if [ "$CPUS" = "$HW_CPUS" ]; then
  NODE_SHAPE="CPUs=$CPUS Boards=1 SocketsPerBoard=$(get SocketsPerBoard) CoresPerSocket=$(get CoresPerSocket) ThreadsPerCore=$(get ThreadsPerCore)"
  SLURMD_PARAMS=""
else
  # advertise more CPUs than exist (oversubscribe a small CI box)
  NODE_SHAPE="CPUs=$CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$CPUS ThreadsPerCore=1"
  SLURMD_PARAMS="SlurmdParameters=config_overrides"
fi

# ---------------------------------------------------------------- munge
if [ "$SLURM_AUTH" = munge ]; then
  AUTH="AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SLURM_BASE/run/munge.socket"
  [ -s "$SLURM_BASE/munge/munge.key" ] || {
    dd if=/dev/urandom of="$SLURM_BASE/munge/munge.key" bs=1 count=1024 2>/dev/null
    chmod 400 "$SLURM_BASE/munge/munge.key"
  }
  /usr/sbin/munged \
    --key-file="$SLURM_BASE/munge/munge.key" \
    --socket="$SLURM_BASE/run/munge.socket" \
    --pid-file="$SLURM_BASE/run/munged.pid" \
    --log-file="$SLURM_BASE/log/munged.log" \
    --seed-file="$SLURM_BASE/munge/munged.seed"
  munge -S "$SLURM_BASE/run/munge.socket" -n | unmunge -S "$SLURM_BASE/run/munge.socket" >/dev/null
  log "munged up (pid $(cat "$SLURM_BASE/run/munged.pid"))"
else
  AUTH="AuthType=auth/none
CredType=cred/none"
fi

# ---------------------------------------------------------------- accounting
if [ "$SLURM_ACCOUNTING" = slurmdbd ]; then
  ACCT="JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$HOST
AccountingStoragePort=6819"
  # the slurmctld->slurmdbd (and sacctmgr/sacct->slurmdbd) connection does NOT
  # use AuthInfo's socket: it takes the munge socket from AccountingStoragePass
  [ "$SLURM_AUTH" = munge ] && ACCT="$ACCT
AccountingStoragePass=$SLURM_BASE/run/munge.socket"
else
  ACCT="JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none"
fi

# ---------------------------------------------------------------- slurm.conf
cat > "$SLURM_BASE/etc/slurm.conf" <<EOF
# generated by start-slurm.sh -- single-node throw-away cluster
ClusterName=calpipe
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
$AUTH
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$SLURM_BASE/state/ctld
SlurmdSpoolDir=$SLURM_BASE/state/d
SlurmctldPidFile=$SLURM_BASE/run/slurmctld.pid
SlurmdPidFile=$SLURM_BASE/run/slurmd.pid
SlurmctldLogFile=$SLURM_BASE/log/slurmctld.log
SlurmdLogFile=$SLURM_BASE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups: plain process tracking, no task containment
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
$ACCT
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without this every job gets the whole node's memory -> jobs run one at a time
DefMemPerCPU=1000
$SLURMD_PARAMS
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
# keep finished jobs visible to squeue for 10 min; the snakemake slurm plugin
# only trusts squeue for status if MinJobAge >= 3 * init-seconds-before-status-checks
MinJobAge=600
KillWait=5
Waittime=0
NodeName=$HOST $NODE_SHAPE RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$SLURM_BASE/etc/slurm.conf"
cat > "$SLURM_BASE/env.sh" <<EOF
export SLURM_CONF="$SLURM_CONF"
EOF
# The config must ALSO be at the default path /etc/slurm/slurm.conf:
# snakemake-executor-plugin-slurm-jobstep strips every SLURM_* variable
# (SLURM_CONF included) before its nested 'srun' inside the job, and that
# srun then fails with "fetch_config: DNS SRV lookup failed".
mkdir -p /etc/slurm
if [ -e /etc/slurm/slurm.conf ] && [ ! -L /etc/slurm/slurm.conf ]; then
  mv /etc/slurm/slurm.conf "/etc/slurm/slurm.conf.bak.$(date +%s)"
fi
ln -sfn "$SLURM_CONF" /etc/slurm/slurm.conf

# ---------------------------------------------------------------- daemons
/usr/sbin/slurmctld          # daemonizes, writes SlurmctldPidFile
/usr/sbin/slurmd             # daemonizes, writes SlurmdPidFile

# ---------------------------------------------------------------- wait for idle node
for i in $(seq 1 120); do
  st="$(sinfo -h -o %T 2>/dev/null || true)"
  [ "$st" = idle ] && break
  sleep 0.5
done
if [ "$st" != idle ]; then
  echo "start-slurm.sh: node did not become idle (state='$st')" >&2
  tail -n 30 "$SLURM_BASE"/log/*.log >&2
  exit 1
fi
log "cluster up: slurmctld pid $(cat "$SLURM_BASE/run/slurmctld.pid"), slurmd pid $(cat "$SLURM_BASE/run/slurmd.pid")"
sinfo
echo "run:  source $SLURM_BASE/env.sh   (export SLURM_CONF=$SLURM_CONF)"
