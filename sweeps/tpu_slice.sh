#!/usr/bin/env bash
# A Cloud TPU slice (several hosts): the same command on every worker; --distributed calls
# jax.distributed.initialize(), which finds the other hosts on TPU VMs by itself. Chunks are
# sharded over every chip of the slice; process 0 writes results to the shared workdir
# (use a bucket path mounted on every host, e.g. with gcsfuse, so that resuming works).
#   TPU=my-slice ZONE=us-central2-b bash sweeps/tpu_slice.sh [CONFIG [WORKDIR [FLAGS ...]]]
#   TPU=my-slice ZONE=us-central2-b bash sweeps/tpu_slice.sh configs/ntdh_overlap.py /mnt/runs/x
set -euo pipefail
: "${TPU:?set TPU to the slice name}" "${ZONE:?set ZONE to the slice zone}"
config=${1:-configs/ntdh_overlap.py}; workdir=${2:-/mnt/runs/tpu_slice}
shift $(( $# < 2 ? $# : 2 ))  # the rest are xdistill flags
# The remote shell parses the command again: quote every argument for it.
remote=$(printf '%q ' xdistill run --distributed --config="$config" --workdir="$workdir" "$@")
gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command="
  cd xdistill_jax && pip install -U 'jax[tpu]' && pip install -e . && $remote"
