#!/usr/bin/env bash
# A SLURM job array over one sweep: array task I of N runs shard I/N (a contiguous block of
# settings, `xdistill run --shard=I/N`) into one WORKDIR on storage every node sees. Tasks are
# independent: any may fail, be preempted or rerun (it resumes), in any order. Submit with
#   sbatch --array=0-31 sweeps/slurm_array.sh [CONFIG [WORKDIR [FLAGS ...]]]
# (CONFIG and WORKDIR may also come from the environment variables of the same names; use a
# contiguous --array range without a step). Then, on any machine, at any time:
#   xdistill plot --workdir=WORKDIR   (writes what is finished, lists the missing settings)
#SBATCH --job-name=xdistill-array
#SBATCH --ntasks=1
set -euo pipefail
: "${SLURM_ARRAY_TASK_ID:?run as a job array: sbatch --array=0-N sweeps/slurm_array.sh}"
: "${SLURM_ARRAY_TASK_COUNT:?run as a job array: sbatch --array=0-N sweeps/slurm_array.sh}"
config=${1:-${CONFIG:-configs/ntdh_overlap.py}}; workdir=${2:-${WORKDIR:-runs/slurm_array}}
shift $(( $# < 2 ? $# : 2 ))  # the rest are xdistill flags
shard=$(( SLURM_ARRAY_TASK_ID - ${SLURM_ARRAY_TASK_MIN:-0} ))  # --array=1-N counts from 1
xdistill run --config="$config" --workdir="$workdir" --shard="$shard/$SLURM_ARRAY_TASK_COUNT" "$@"
