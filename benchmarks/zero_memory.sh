#!/usr/bin/env bash
# Per-rank model-state memory at 2 ranks: DDP vs ZeRO-2 vs ZeRO-3 (see benchmarks/zero_memory.py).
# Usage: bash benchmarks/zero_memory.sh [preset]   -> benchmarks/results/zero_memory_<preset>.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=${1:-base}
BIN=.venv/bin
OUT=benchmarks/results/zero_memory_${PRESET}.jsonl
export OMP_NUM_THREADS=1
: > "$OUT"
run() { "$@" 2>&1 | grep '^ZERO_MEMORY ' | sed 's/^ZERO_MEMORY //' >> "$OUT"; }
run env ACCELERATE_USE_CPU=1 $BIN/torchrun --nproc_per_node 2 --master_port 29561 benchmarks/zero_memory.py --label ddp --preset "$PRESET"
run $BIN/accelerate launch --config_file accelerate_configs/cpu_2proc_zero2.yaml --main_process_port 29562 \
    benchmarks/zero_memory.py --label zero2 --preset "$PRESET"
run $BIN/accelerate launch --config_file accelerate_configs/cpu_2proc_zero3.yaml --main_process_port 29563 \
    benchmarks/zero_memory.py --label zero3 --preset "$PRESET"
cat "$OUT"
