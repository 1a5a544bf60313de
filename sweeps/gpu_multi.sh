#!/usr/bin/env bash
# All GPUs of one machine: each chunk is sharded over every visible GPU (jit + NamedSharding).
# Results are the same as on one GPU (the vmap width, not the device count, fixes the program).
#   bash sweeps/gpu_multi.sh configs/ntdh_table1.py runs/gpus [--config.FIELD=VALUE ...]
set -euo pipefail
config=${1:-configs/ntdh_overlap.py}; workdir=${2:-runs/gpu_multi}; shift 2 || true
pip install -U "jax[cuda12]" && pip install -e .
nvidia-smi -L
xdistill run --config="$config" --workdir="$workdir" "$@"
