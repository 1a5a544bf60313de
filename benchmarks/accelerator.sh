#!/usr/bin/env bash
# Every benchmark in benchmarks/ at accelerator-sized settings (about 5 minutes), one JSON.
#
#   benchmarks/accelerator.sh [OUT.json]                       # on a GPU or TPU machine
#   XDISTILL_BENCH_SIZES=cpu benchmarks/accelerator.sh OUT.json  # CPU-sized: proves it runs
#
# OUT.json defaults to accelerator.json in the current directory; see benchmarks/accelerator.py.
set -euo pipefail
out="$(realpath -m "${1:-accelerator.json}")"
cd "$(dirname "$0")"
exec "${PYTHON:-python}" accelerator.py --sizes "${XDISTILL_BENCH_SIZES:-accelerator}" --out "$out"
