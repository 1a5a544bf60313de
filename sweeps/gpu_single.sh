#!/usr/bin/env bash
# One NVIDIA GPU: install JAX with CUDA, then run a sweep on GPU 0. One device compiles an
# unpartitioned program, whose results can differ from a run on two or more GPUs in float
# rounding (see README, Reproducibility).
#   bash sweeps/gpu_single.sh [CONFIG [WORKDIR [--config.FIELD=VALUE ...]]]
#   bash sweeps/gpu_single.sh configs/ntdh_overlap.py runs/gpu --config.runs=10
set -euo pipefail
config=${1:-configs/ntdh_overlap.py}; workdir=${2:-runs/gpu_single}
shift $(( $# < 2 ? $# : 2 ))  # the rest are xdistill flags
pip install -U "jax[cuda12]" && pip install -e .
CUDA_VISIBLE_DEVICES=0 xdistill run --config="$config" --workdir="$workdir" "$@"
