#!/usr/bin/env bash
# Runs `make demo` with every stage timed; writes demo_runs/stage_timings.txt and the results table as markdown.
# Usage: bash benchmarks/demo_timings.sh   (from the repository root; the venv must already be installed)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${DEMO_RUNS:-demo_runs}
# `make demo` deletes its runs directory first, so the timings are collected outside it and copied in at the end.
timings=$(mktemp)
start=$(date +%s)
make demo DEMO_RUNS="$runs" STAGE_TIMER="/usr/bin/time -f '%e s wall  %C' -a -o $timings"
echo "total $(( $(date +%s) - start )) s (make demo, venv already installed)" >> "$timings"
mv "$timings" "$runs/stage_timings.txt"
cat "$runs/stage_timings.txt"
.venv/bin/python -m violet.report "$runs" --markdown | tee "$runs/results.md"
