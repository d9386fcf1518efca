"""What a recipe costs per step against its task's default, measured in the same minutes.

This VM's speed drifts by ~25 % within an hour, so the training time of one ablation row against another run's time
from another hour says little about whether a recipe fits the 10-minute budget. Here each row of
`benchmarks/ablate.py` (same names) trains for a few steps on one prepared world, the rows taking turns round by
round, and the median throughput of each is compared with the first row's from the same rounds:

    python benchmarks/step_cost.py --data /tmp/worlds/w1 --out /tmp/step_cost \\
        --rows qa-mc/default "qa-mc/temporal_weight=1,negative=reverse,epochs=24" --steps 40 --rounds 2

Prints one JSON object: per row the median seconds a step (from `perf/clips_per_s` in each run's train_log.jsonl,
the first logged interval dropped as warm-up), the ratio to the first row, and the row's whole training time
at the pace of these rounds (steps per epoch x epochs x seconds a step; checkpoints and evaluation not counted).
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablate import ROWS  # noqa: E402
from heldout import ROOT, launch, run  # noqa: E402


def step_seconds(run_dir: Path, batch: int) -> list[float]:
    """Seconds a step over each logged interval but the first (warm-up), from the run's own throughput log."""
    rates = [entry["perf/clips_per_s"] for entry in map(json.loads, (run_dir / "train_log.jsonl").open())
             if "perf/clips_per_s" in entry]
    return [batch / rate for rate in rates[1:]]


def training_log(run_dir: Path) -> Path:
    return run_dir.parent / f"{run_dir.name}.log"  # beside the run, one per round


def recipe_steps(run_dir: Path, config: dict) -> int:
    """Optimizer steps the row's full recipe takes: its epochs x the steps of one epoch, which the run printed
    when it started ("... steps=40 (15/epoch) ...")."""
    log = training_log(run_dir)
    printed = re.search(r"steps=\d+ \((\d+)/epoch\)", log.read_text())
    if printed is None:
        raise SystemExit(f"{log}: no 'steps=N (K/epoch)' line; did the run start?")
    return int(config["train"]["epochs"]) * int(printed.group(1))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--data", type=Path, required=True, help="one prepared world (or any prepared data set)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), required=True,
                        help="rows of benchmarks/ablate.py; the first is the reference")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, list[float]] = {name: [] for name in args.rows}
    last_run: dict[str, Path] = {}
    configs: dict[str, dict] = {}
    for round_index in range(args.rounds):
        for name in args.rows:
            task, overrides = ROWS[name]
            run_dir = args.out / f"{name.replace('/', '__')}.{round_index}"
            run(launch(["--task", task, "--data", str(args.data), "--output-dir", str(run_dir), "--max-steps",
                        str(args.steps), "train.log_every=5", "train.eval_every=0", *overrides]),
                training_log(run_dir))
            configs[name] = json.loads((run_dir / "config.json").read_text())  # the row's resolved config
            seconds[name].extend(step_seconds(run_dir, configs[name]["train"]["batch_size"]))
            last_run[name] = run_dir
    reference = statistics.median(seconds[args.rows[0]])
    table = {}
    for name in args.rows:
        per_step = statistics.median(seconds[name])
        steps = recipe_steps(last_run[name], configs[name])
        table[name] = {"s_per_step": round(per_step, 3), "ratio": round(per_step / reference, 3),
                       "recipe_steps": steps, "recipe_seconds_at_this_pace": round(steps * per_step, 1)}
    result = {"data": str(args.data), "steps": args.steps, "rounds": args.rounds, "rows": table}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main(sys.argv[1:])
