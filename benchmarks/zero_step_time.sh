#!/usr/bin/env bash
# Step time on CPU, same global batch: 1 process vs 2-process ZeRO-2 vs 2-process ZeRO-3 (retrieval, tiny preset).
# Usage: bash benchmarks/zero_step_time.sh [DATA] [STEPS] [GLOBAL_BATCH] [KEY=VALUE ...]
#   DATA defaults to benchmarks/.data/demo (made and prepared on first use). Overrides after the batch go to every
#   run alike (e.g. objective.vtm_weight=1 to time the step with the VTM pass, as the first measurements did).
# Prints one JSON line per setting; seconds per optimizer step are taken from train_log.jsonl after the first
# logging window (which includes start-up, DeepSpeed's JIT build and the first batches).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
DATA=${1:-benchmarks/.data/demo}
STEPS=${2:-40}
GLOBAL=${3:-32}
shift $(( $# < 3 ? $# : 3 ))
RUNS=$(mktemp -d)
if [ ! -d "$DATA/hf" ]; then
  $BIN/python -m prepare.demo "$DATA" && $BIN/python -m prepare "$DATA"
fi
COMMON=(train.py --task retrieval --data "$DATA" --max-steps "$STEPS" train.log_every=10 train.save_every=0
        train.eval_every=0 data.num_workers=1 train.mixed_precision=no "$@")
report() {  # label, output dir, processes
  $BIN/python - "$1" "$2" "$3" "$GLOBAL" <<'PY'
import json, sys
label, out, procs, global_batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rows = [json.loads(line) for line in open(f"{out}/train_log.jsonl")]
steady = [row["perf/clips_per_s"] for row in rows[1:]]
clips_per_s = sum(steady) / len(steady)
print(json.dumps({"label": label, "processes": procs, "global_batch": global_batch,
                  "clips_per_s": round(clips_per_s, 2), "s_per_step": round(global_batch / clips_per_s, 3),
                  "final_loss": round(rows[-1]["train/loss"], 4)}))
PY
}
$BIN/accelerate launch --num_processes 1 --num_machines 1 --num_cpu_threads_per_process "$(nproc)" \
  --mixed_precision no --dynamo_backend no "${COMMON[@]}" --output-dir "$RUNS/one" --batch-size "$GLOBAL" \
  > "$RUNS/one.log" 2>&1
report one_process "$RUNS/one" 1
for stage in zero2 zero3; do
  OMP_NUM_THREADS=1 $BIN/accelerate launch --config_file accelerate_configs/cpu_2proc_$stage.yaml \
    "${COMMON[@]}" --output-dir "$RUNS/$stage" --batch-size $((GLOBAL / 2)) > "$RUNS/$stage.log" 2>&1
  report "2proc_$stage" "$RUNS/$stage" 2
done
rm -rf "$RUNS"
