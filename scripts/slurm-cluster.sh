#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, from Debian's packages, for CI and for trying the slurm
# profile on a laptop (as root; no systemd: every daemon is started by hand and stopped by its PID).
#
#   scripts/slurm-cluster.sh install   # apt-get the packages (slurmctld slurmd slurm-client slurmdbd munge mariadb)
#   scripts/slurm-cluster.sh start     # munged, mariadbd, slurmdbd, the accounts, slurmctld, slurmd; waits until idle
#   scripts/slurm-cluster.sh stop      # every daemon started here, by the PID files under $AIEV_SLURM_DIR
#   scripts/slurm-cluster.sh status
#
# Cluster "aiev", partition "debug" (this host, its CPUs and memory), account "aiev" for root. Accounting goes
# through slurmdbd to MariaDB, so `sacct` works (the executor plugin checks job states with sacct, and without
# slurmdbd those checks fail and a run waits forever). Memory is enforced by the cgroup (v1) task plugin, so a job
# over its --mem is killed (OUT_OF_MEMORY), as on a real cluster. State, logs and PID files live in
# $AIEV_SLURM_DIR (default /tmp/aiev-slurm); configuration in /etc/slurm and /etc/munge (the packages' paths).
set -euo pipefail

dir=${AIEV_SLURM_DIR:-/tmp/aiev-slurm}
host=$(hostname -s)
cluster=aiev
account=aiev

log() { echo "slurm-cluster: $*" >&2; }

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (it starts system daemons)"
    exit 1
  fi
}

install_packages() {
  need_root
  local missing=()
  for bin in slurmctld slurmd sbatch slurmdbd munged mariadbd; do
    command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    return 0
  fi
  log "installing the SLURM packages (missing: ${missing[*]})"
  # the packages' own start-up (systemd units, init scripts) must not run: this script starts the daemons
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client slurmdbd munge mariadb-server >/dev/null
  rm -f /usr/sbin/policy-rc.d
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      log "$what did not come up in ${seconds}s; logs in $dir"
      tail -n 20 "$dir"/*.log "$dir"/mysql/*.log >&2 2>/dev/null || true
      return 1
    fi
    sleep 0.5
  done
}

pidfile() {  # mariadbd runs as mysql: its PID file lies in its own data directory
  if [ "$1" = mariadb ]; then echo "$dir/mysql/mariadb.pid"; else echo "$dir/$1.pid"; fi
}

alive() { [ -f "$(pidfile "$1")" ] && kill -0 "$(cat "$(pidfile "$1")")" 2>/dev/null; }

write_config() {
  local cpus mem_mb
  cpus=$(nproc)
  mem_mb=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024))  # leave 1 GiB to the system
  mkdir -p /etc/slurm "$dir"/{ctld,d,mysql} /var/log/slurm
  cat >/etc/slurm/slurm.conf <<EOF
# written by scripts/slurm-cluster.sh: a one-node test cluster
ClusterName=$cluster
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/d
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/cgroup
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
MinJobAge=300
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageEnforce=associations
AccountingStoreFlags=job_comment # sacct shows the rule (the plugin puts it in --comment)
JobRequeue=1
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  cat >/etc/slurm/cgroup.conf <<EOF
# cgroup v1 memory enforcement: a job over its --mem is killed
CgroupPlugin=cgroup/v1
ConstrainRAMSpace=yes
ConstrainSwapSpace=yes
AllowedSwapSpace=0
EOF
  cat >/etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$dir/slurmdbd.pid
LogFile=$dir/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=slurm
StoragePass=aiev-slurm
StorageLoc=slurm_acct_db
EOF
  chmod 600 /etc/slurm/slurmdbd.conf
}

start() {
  need_root
  install_packages
  write_config
  # munge: the key, then munged as user munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- munged --force
  fi
  pgrep -x munged >"$dir/munged.pid"
  wait_for 10 munge sh -c 'munge -n | unmunge'

  # MariaDB on 127.0.0.1 only, its data in $dir
  if ! alive mariadb; then
    if [ ! -d "$dir/mysql/mysql" ]; then
      chown mysql:mysql "$dir/mysql"
      mariadb-install-db --user=mysql --datadir="$dir/mysql" --auth-root-authentication-method=socket >/dev/null
    fi
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    mariadbd --user=mysql --datadir="$dir/mysql" --bind-address=127.0.0.1 --port=3306 \
      --socket=/run/mysqld/mysqld.sock --pid-file="$(pidfile mariadb)" --log-error="$dir/mysql/mariadb.log" &
    wait_for 60 MariaDB mariadb --socket=/run/mysqld/mysqld.sock -e 'select 1'
  fi
  mariadb --socket=/run/mysqld/mysqld.sock <<'EOF'
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'aiev-slurm';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'aiev-slurm';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
EOF

  alive slurmdbd || slurmdbd
  wait_for 30 slurmdbd sacctmgr -n list cluster
  sacctmgr -i add cluster "$cluster" >/dev/null 2>&1 || true
  sacctmgr -i add account "$account" Cluster="$cluster" Description="aiev CI" Organization=aiev >/dev/null 2>&1 || true
  sacctmgr -i add user root Account="$account" Cluster="$cluster" >/dev/null 2>&1 || true

  alive slurmctld || slurmctld
  wait_for 30 slurmctld scontrol ping
  alive slurmd || { sweep_job_cgroups; slurmd; }
  wait_for 60 "node $host" sh -c "sinfo -h -n $host -o %t | grep -qE '^(idle|mix|alloc)'"
  log "up: cluster $cluster, partition debug, account $account, node $host ($(nproc) CPUs)"
}

sweep_job_cgroups() {
  # Processes a dead job left behind: a job killed with its node (NODE_FAIL) can leave its batch script's children
  # running under proctrack/linuxproc, inside the job's cgroup. They are killed, and the job cgroups removed, so
  # that a later cluster's job of the same id can set up its cgroup (else slurmd fails the job and drains the node).
  local dir pid
  for dir in /sys/fs/cgroup/*/slurm_"$host"; do
    [ -d "$dir" ] || continue
    for pid in $(find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u); do
      kill -9 "$pid" 2>/dev/null || true
    done
    sleep 0.5
    find "$dir" -mindepth 1 -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

stop() {
  need_root
  local name pid
  for name in slurmd slurmctld slurmdbd mariadb munged; do
    if [ -f "$(pidfile $name)" ]; then
      pid=$(cat "$(pidfile $name)")
      if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -9 "$pid" 2>/dev/null || true
      fi
      rm -f "$(pidfile $name)"
    fi
  done
  # job steps the daemons left behind (slurmstepd), and what dead jobs left in their cgroups
  pkill -9 -x slurmstepd 2>/dev/null || true
  sweep_job_cgroups
  log "stopped"
}

status() {
  local name
  for name in munged mariadb slurmdbd slurmctld slurmd; do
    if alive $name; then echo "$name: running ($(cat "$(pidfile $name)"))"; else echo "$name: stopped"; fi
  done
  sinfo 2>/dev/null || true
}

case "${1:-}" in
  install) install_packages ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *)
    echo "usage: $0 install|start|stop|status" >&2
    exit 2
    ;;
esac
