"""Print one results table from the evaluation JSON files of a demo/benchmark run directory.

`python -m violet.report RUNS [--markdown]` reads RUNS/{zero_shot,finetuned}_<task>.json as written by
`evaluate.py --output`, and shows zero-shot vs fine-tuned vs chance for each task.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# task -> (headline metric, how chance is computed from the metrics file)
HEADLINES = {"retrieval": "t2v_r1", "qa-mc": "accuracy", "qa-oe": "accuracy"}


def chance(task: str, metrics: dict) -> float | None:
    if task == "retrieval":
        return 100.0 / metrics["n_videos"]
    if task == "qa-mc":
        return metrics.get("chance")
    if task == "qa-oe":
        return 100.0 / metrics["num_answers"]
    return None


def load(runs: Path, kind: str, task: str) -> dict | None:
    path = runs / f"{kind}_{task}.json"
    return json.loads(path.read_text()) if path.exists() else None


def rows(runs: Path) -> list[tuple[str, str, str, str, str, str]]:
    table = []
    for task, metric in HEADLINES.items():
        zero, tuned = load(runs, "zero_shot", task), load(runs, "finetuned", task)
        if zero is None and tuned is None:
            continue
        reference = tuned or zero
        base = chance(task, reference)

        def show(value: dict | None) -> str:
            return f"{value[metric]:.1f}" if value else "n/a"

        extra = f"n={reference['n']}" + (f", n_oov={reference['n_oov']}" if "n_oov" in reference else "")
        table.append((task, metric, f"{base:.1f}" if base is not None else "n/a", show(zero), show(tuned), extra))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs")
    parser.add_argument("--data", help="shown in the heading")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    table = rows(Path(args.runs))
    if not table:
        print(f"no evaluation files in {args.runs}", file=sys.stderr)
        return 1
    header = ("task", "metric (%)", "chance", "zero-shot", "fine-tuned", "eval set")
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in table:
            print("| " + " | ".join(row) + " |")
        return 0
    widths = [max(len(str(row[i])) for row in [header, *table]) for i in range(len(header))]
    print(f"\nResults on {args.data or args.runs} (test split)")
    for row in [header, *table]:
        print("  " + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
