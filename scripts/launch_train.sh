#!/usr/bin/env bash
# Starts the training workers: one torchrun per node, the same code path from a laptop to 10 SLURM nodes.
#
#   scripts/launch_train.sh NODES PROCS_PER_NODE -- WORKER_ARGS...
#
# NODES=1: torchrun --standalone on this machine (a laptop, CI, one GPU node).
# NODES>1: inside a SLURM allocation. The rule carries an `mpi` resource, so snakemake-executor-plugin-slurm-jobstep
# runs this script without srun, on the allocation's first node, and strips the SLURM_* variables but the job id:
# node and task counts are therefore passed explicitly here, never read from SLURM_JOB_NODELIST. srun then starts
# one torchrun per node; all of them meet at a c10d rendezvous on this (the first) node.
# AIEV_DRY_RUN=1 prints the command instead of running it (tests check the exact lines).
set -euo pipefail
if [ $# -lt 3 ] || [ "$3" != "--" ]; then
  echo "usage: $0 NODES PROCS_PER_NODE -- WORKER_ARGS..." >&2
  exit 2
fi
nodes=$1
procs=$2
shift 3
python=${AIEV_PYTHON:-python3}
port=${AIEV_RDZV_PORT:-29400}

run() {
  if [ -n "${AIEV_DRY_RUN:-}" ]; then
    printf '%q ' "$@" | sed 's/ $//'
    echo
  else
    exec "$@"
  fi
}

if [ "$nodes" -eq 1 ]; then
  run "$python" -m torch.distributed.run --standalone --nnodes=1 --nproc-per-node="$procs" \
    -m aiev.train.worker "$@"
else
  head=$(hostname)
  run srun --nodes="$nodes" --ntasks="$nodes" --ntasks-per-node=1 --kill-on-bad-exit=1 \
    "$python" -m torch.distributed.run --nnodes="$nodes" --nproc-per-node="$procs" \
    --rdzv-id="${SLURM_JOB_ID:?NODES>1 runs inside a SLURM job}" --rdzv-backend=c10d \
    --rdzv-endpoint="$head:$port" -m aiev.train.worker "$@"
fi
