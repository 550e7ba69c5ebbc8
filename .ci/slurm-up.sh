#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the SLURM executor test (Debian's slurm-wlm and
# munge; root). Idempotent: a running controller is left alone. A controller it starts starts empty: state saved
# by an earlier life of this machine (jobs recorded as running when it stopped, or an image taken mid-run) is
# dropped, since recovered jobs would hold the node's CPUs until slurmctld gives up on them half an hour later.
set -euo pipefail
if scontrol ping 2>/dev/null | grep -q "is UP"; then exit 0; fi
host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=sublevel
SlurmctldHost=${host}
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
MinJobAge=300
NodeName=${host} CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=main Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF
[ -f /etc/munge/munge.key ] || { mkdir -p /etc/munge; dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
chown -R munge:munge /etc/munge /run/munge /var/log/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged 2>/dev/null || /usr/sbin/munged --force
if ! pgrep -x slurmctld >/dev/null; then
    rm -rf /var/spool/slurmctld/* /var/spool/slurmd/*
    slurmctld -c
fi
pgrep -x slurmd >/dev/null || slurmd -c
for _ in $(seq 30); do
    sinfo -h -o %T 2>/dev/null | grep -qE "idle|mix|alloc" && exit 0
    sleep 1
done
echo "slurm did not come up:" >&2
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2
exit 1
