#!/usr/bin/env bash
# All GPUs of one machine: each chunk is sharded over every visible GPU (jit + NamedSharding).
# Results do not depend on the GPU count from two GPUs on (every count compiles the same
# partitioned per-device program); a single GPU compiles an unpartitioned program, whose
# results can differ in float rounding (see README, Reproducibility).
#   bash sweeps/gpu_multi.sh [CONFIG [WORKDIR [--config.FIELD=VALUE ...]]]
#   bash sweeps/gpu_multi.sh configs/ntdh_table1.py runs/gpus --config.G.runs=20
set -euo pipefail
config=${1:-configs/ntdh_overlap.py}; workdir=${2:-runs/gpu_multi}
shift $(( $# < 2 ? $# : 2 ))  # the rest are xdistill flags
pip install -U "jax[cuda12]" && pip install -e .
nvidia-smi -L
xdistill run --config="$config" --workdir="$workdir" "$@"
