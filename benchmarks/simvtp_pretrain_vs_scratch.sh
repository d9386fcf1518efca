#!/usr/bin/env bash
# Does SimVTP-style pretraining help? simvtp-tiny on the demo data: pretrain (90 % tube masking, 75 % text masking)
# then fine-tune retrieval, against retrieval from scratch with the same fine-tuning steps and with the same total
# steps. Prints one JSON line per run with test-split retrieval metrics and wall time.
# Usage: bash benchmarks/simvtp_pretrain_vs_scratch.sh   (repository root, venv installed)
# Budgets: PRETRAIN_STEPS (120), FINETUNE_STEPS (60), BATCH (16); DATA / RUNS directories.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${DATA:-/tmp/simvtp_bench/data}
runs=${RUNS:-/tmp/simvtp_bench/runs}
pretrain_steps=${PRETRAIN_STEPS:-120}
finetune_steps=${FINETUNE_STEPS:-60}
batch=${BATCH:-16}
py=.venv/bin/python
# Until build_config applies preset_overrides, the SimVTP ratios are passed explicitly (docs/models.md).
model=(--model simvtp-tiny --batch-size "$batch" objective.mvm_ratio=0.9 objective.mlm_prob=0.75 data.num_frames=4)
rm -rf "$runs" && mkdir -p "$runs"
if [ ! -f "$data/hf/summary.json" ]; then
  rm -rf "$data"
  $py -m prepare.demo "$data" && $py -m prepare "$data"
fi

timed() {  # name, then train.py arguments; evaluates the run on test and prints a JSON line
  local name=$1; shift
  local start; start=$(date +%s)
  $py train.py --data "$data" --output-dir "$runs/$name" "${model[@]}" "$@" > "$runs/$name.log" 2>&1
  local train_s=$(( $(date +%s) - start ))
  if [ "$name" != pretrain ]; then
    $py evaluate.py --task retrieval --data "$data" --checkpoint "$runs/$name" --output "$runs/$name.json" \
      > "$runs/$name.eval.log" 2>&1
    $py -c "import json,sys; m=json.load(open('$runs/$name.json')); print(json.dumps({'run': '$name', 'train_s': $train_s, **{k: m[k] for k in ('t2v_r1','t2v_r5','t2v_r10','v2t_r1','n')}}))"
  else
    echo "{\"run\": \"pretrain\", \"train_s\": $train_s, \"steps\": $pretrain_steps}"
  fi
}

timed pretrain --task pretrain --max-steps "$pretrain_steps"
timed finetune_from_pretrain --task retrieval --init "$runs/pretrain" --max-steps "$finetune_steps"
timed scratch_same_finetune_steps --task retrieval --max-steps "$finetune_steps"
timed scratch_same_total_steps --task retrieval --max-steps $(( pretrain_steps + finetune_steps ))
