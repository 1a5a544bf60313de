#!/usr/bin/env bash
# Several GPU nodes under SLURM: one process per node, jax.distributed.initialize() reads the
# SLURM environment. Submit with: sbatch --nodes=4 --gpus-per-node=8 sweeps/slurm_multinode.sh
#SBATCH --job-name=xdistill
#SBATCH --ntasks-per-node=1
set -euo pipefail
srun xdistill run --distributed --config="${CONFIG:-configs/ntdh_overlap.py}" \
  --workdir="${WORKDIR:-runs/slurm}"
