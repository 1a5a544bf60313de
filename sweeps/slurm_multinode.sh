#!/usr/bin/env bash
# Several GPU nodes under SLURM: one process per node, jax.distributed.initialize() reads the
# SLURM environment. Submit with
#   sbatch --nodes=4 --gpus-per-node=8 sweeps/slurm_multinode.sh [CONFIG [WORKDIR [FLAGS ...]]]
# (CONFIG and WORKDIR may also come from the environment variables of the same names).
#SBATCH --job-name=xdistill
#SBATCH --ntasks-per-node=1
set -euo pipefail
config=${1:-${CONFIG:-configs/ntdh_overlap.py}}; workdir=${2:-${WORKDIR:-runs/slurm}}
shift $(( $# < 2 ? $# : 2 ))  # the rest are xdistill flags
srun xdistill run --distributed --config="$config" --workdir="$workdir" "$@"
