"""Print one results table from the metrics files evaluate.py writes.

`python -m violet.report RUNS [--markdown]`: RUNS is one run directory or a directory of runs (the demo's
demo_runs/). Read, in RUNS and the directories directly under it:
    eval_<task>_<split>.json      evaluate.py's default output, in the evaluated checkpoint's run directory
    any other *.json evaluate.py wrote (--output), known by its "setup" (the demo's zero_shot_<task>.json)
    zero_shot_<task>.json / finetuned_<task>.json without a setup (files of older versions: the test split)
Each file counts as zero-shot or fine-tuned by its setup's `zero_shot` flag (older files: by their name). The
table shows, per task and split, zero-shot vs fine-tuned vs chance; when several files fill one cell the newest
is shown, and every file shown is listed under the table.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

# task -> headline metric
HEADLINES = {"retrieval": "t2v_r1", "qa-mc": "accuracy", "qa-oe": "accuracy"}
KINDS = ("zero-shot", "fine-tuned")
OLD_NAME = re.compile(r"^(zero_shot|finetuned)_(retrieval|qa-mc|qa-oe)\.json$")


def chance(task: str, metrics: dict) -> float | None:
    if task == "retrieval" and metrics.get("n_videos"):
        return 100.0 / metrics["n_videos"]
    if task == "qa-mc":
        return metrics.get("chance")
    if task == "qa-oe" and metrics.get("num_answers"):
        return 100.0 / metrics["num_answers"]
    return None


def describe(path: Path, metrics: Any) -> tuple[str, str, str] | None:
    """(task, split, kind) of a metrics file evaluate.py wrote; None for any other JSON (configs, run.json,
    the Trainer's metrics_<split>.json)."""
    if not isinstance(metrics, dict):
        return None
    setup = metrics.get("setup")
    if isinstance(setup, dict) and setup.get("task") in HEADLINES and "split" in setup:
        return setup["task"], setup["split"], KINDS[0] if setup.get("zero_shot") else KINDS[1]
    old = OLD_NAME.match(path.name)
    if old and HEADLINES[old.group(2)] in metrics:
        return old.group(2), "test", KINDS[0] if old.group(1) == "zero_shot" else KINDS[1]
    return None


def candidates(runs: Path) -> list[Path]:
    """JSON files in RUNS and one level down; a directory's eval_*.json files come with the others."""
    if not runs.is_dir():
        return []
    return sorted(runs.glob("*.json")) + sorted(runs.glob("*/*.json"))


def collect(runs: Path) -> dict[tuple[str, str], dict[str, tuple[Path, dict]]]:
    """(task, split) -> kind -> (file, metrics) of the newest file for that cell."""
    found: dict[tuple[str, str], dict[str, tuple[Path, dict]]] = {}
    for path in candidates(runs):
        if path.stat().st_size > 10_000_000:  # metrics files are small; never parse a large unrelated JSON
            continue
        try:
            metrics = json.loads(path.read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        described = describe(path, metrics)
        if described is None:
            continue
        task, split, kind = described
        cell = found.setdefault((task, split), {})
        if kind not in cell or path.stat().st_mtime >= cell[kind][0].stat().st_mtime:
            cell[kind] = (path, metrics)
    return found


def rows(runs: Path) -> tuple[list[tuple[str, ...]], list[str]]:
    """The table (task, metric, chance, zero-shot, fine-tuned, eval set) and the files it was read from."""
    table, sources = [], []
    cells = collect(runs)
    order = {task: position for position, task in enumerate(HEADLINES)}
    for task, split in sorted(cells, key=lambda key: (order[key[0]], key[1])):
        cell = cells[(task, split)]
        metric = HEADLINES[task]
        reference = (cell.get(KINDS[1]) or cell[KINDS[0]])[1]
        base = chance(task, reference)
        shown = [f"{cell[kind][1][metric]:.1f}" if kind in cell else "n/a" for kind in KINDS]
        extra = f"{split}, n={reference['n']}" + (f", n_oov={reference['n_oov']}" if "n_oov" in reference else "")
        table.append((task, metric, f"{base:.1f}" if base is not None else "n/a", *shown, extra))
        sources += [f"{task} {split} {kind}: {cell[kind][0]}" for kind in KINDS if kind in cell]
    return table, sources


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", help="a run directory, or a directory of run directories")
    parser.add_argument("--data", help="shown in the heading")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    table, sources = rows(Path(args.runs))
    if not table:
        print(f"no evaluation files in {args.runs} or the directories under it (run evaluate.py first)",
              file=sys.stderr)
        return 1
    header = ("task", "metric (%)", "chance", "zero-shot", "fine-tuned", "eval set")
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in table:
            print("| " + " | ".join(row) + " |")
        print("\nRead from:\n" + "\n".join(f"- `{source}`" for source in sources))
        return 0
    widths = [max(len(str(row[i])) for row in [header, *table]) for i in range(len(header))]
    print(f"\nResults on {args.data or args.runs}")
    for row in [header, *table]:
        print(("  " + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths))).rstrip())
    print("\nread from:\n" + "\n".join(f"  {source}" for source in sources))
    return 0


if __name__ == "__main__":
    sys.exit(main())
