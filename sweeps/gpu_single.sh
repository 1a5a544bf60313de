#!/usr/bin/env bash
# One NVIDIA GPU: install JAX with CUDA, then run a sweep on GPU 0.
#   bash sweeps/gpu_single.sh configs/ntdh_overlap.py runs/gpu [--config.FIELD=VALUE ...]
set -euo pipefail
config=${1:-configs/ntdh_overlap.py}; workdir=${2:-runs/gpu_single}; shift 2 || true
pip install -U "jax[cuda12]" && pip install -e .
CUDA_VISIBLE_DEVICES=0 xdistill run --config="$config" --workdir="$workdir" "$@"
