"""Held-out worlds: what a new user gets from the defaults on data nobody tuned on.

For each seed (never used to choose a default) it writes a fresh world (prepare/worlds.py), prepares it, trains
every task with default settings only, evaluates on the world's *test* split, and prints one JSON object: per
world and the mean over worlds. With pretraining among the tasks it also fine-tunes retrieval from the pretraining
run (the `--init` defaults) and trains retrieval from scratch for as many epochs as that fine-tuning (the same
step budget); with retrieval among them, retrieval from scratch runs with its own defaults, and the bare reference
loop (benchmarks/bare_loop.py) on the same data.

    python benchmarks/heldout.py --out /tmp/heldout --seeds 1001 1002 1003 [--tasks retrieval qa-mc qa-oe pretrain]

Defaults were chosen on the val splits of worlds with seeds 1-3 (docs/benchmarks.md, "Learning"); keep the seeds
here disjoint from those.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TUNING_SEEDS = {1, 2, 3}  # the worlds whose val splits chose the defaults
TASKS = ("retrieval", "qa-mc", "qa-oe", "pretrain")
HEADLINE = {"retrieval": "t2v_r1", "qa-mc": "accuracy", "qa-oe": "accuracy", "zero-shot": "t2v_r1",
            "finetuned-from-pretrain": "t2v_r1", "scratch-at-finetune-budget": "t2v_r1", "bare-retrieval": "t2v_r1"}


def run(command: list[str], log: Path) -> float:
    """Run a command with its output in `log`; returns wall seconds; fails loudly with the log's tail."""
    started = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}); end of {log}:\n{tail}")
    return time.perf_counter() - started


def launch(args: list[str]) -> list[str]:
    threads = str(os.cpu_count() or 1)
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
            "--num_cpu_threads_per_process", threads, "--mixed_precision", "no", "--dynamo_backend", "no",
            "train.py", *args]


def evaluate(task: str, data: Path, run_dir: Path, out: Path, extra: list[str] = (), split: str = "test") -> dict:
    run([sys.executable, "evaluate.py", "--task", task, "--data", str(data), "--checkpoint", str(run_dir),
         "--split", split, "--output", str(out), *extra], out.with_suffix(".log"))
    return json.loads(out.read_text())


def one_world(seed: int, out: Path, tasks: list[str], bare: bool = True) -> dict:
    from prepare.worlds import make_world

    data, runs = out / f"world_{seed}", out / f"runs_{seed}"
    if (runs / "result.json").exists():  # a finished world is reused, whatever tasks it ran (see the summary counts)
        return json.loads((runs / "result.json").read_text())
    runs.mkdir(parents=True, exist_ok=True)
    if not (data / "hf").exists():
        make_world(data, seed)
        run([sys.executable, "-m", "prepare", str(data)], runs / "prepare.log")
    result: dict = {"seed": seed, "seconds": {}}
    for task in tasks:
        run_dir = runs / task
        result["seconds"][task] = round(run(launch(["--task", task, "--data", str(data), "--output-dir",
                                                    str(run_dir)]), runs / f"{task}.log"), 1)
        if task == "pretrain":
            pretrain_then_finetune(data, runs, run_dir, result)
        else:
            result[task] = evaluate(task, data, run_dir, runs / f"{task}.json")
    if bare and "retrieval" in tasks:  # the bare loop is the reference for the retrieval recipe
        reference = subprocess.run([sys.executable, "benchmarks/bare_loop.py", "--task", "retrieval", "--data",
                                    str(data), "--split", "test"], cwd=ROOT, capture_output=True, text=True,
                                   check=True)
        result["bare-retrieval"] = json.loads(reference.stdout.strip().splitlines()[-1])
    (runs / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def pretrain_then_finetune(data: Path, runs: Path, pretrained: Path, result: dict) -> None:
    """Zero-shot retrieval of the pretraining run, retrieval fine-tuned from it with the `--init` defaults, and
    retrieval from scratch (its own recipe) trained for as many epochs as that fine-tuning: the same step budget."""
    result["zero-shot"] = evaluate("retrieval", data, pretrained, runs / "zero_shot.json", ["--zero-shot"])
    ft_dir = runs / "retrieval_from_pretrain"
    result["seconds"]["finetune"] = round(run(launch(["--task", "retrieval", "--data", str(data), "--output-dir",
                                                      str(ft_dir), "--init", str(pretrained)]),
                                              runs / "finetune.log"), 1)
    result["finetuned-from-pretrain"] = evaluate("retrieval", data, ft_dir, runs / "finetune.json")
    epochs = json.loads((ft_dir / "config.json").read_text())["train"]["epochs"]
    scratch_dir = runs / "retrieval_scratch_same_budget"
    result["seconds"]["scratch-same-budget"] = round(run(launch([
        "--task", "retrieval", "--data", str(data), "--output-dir", str(scratch_dir), f"train.epochs={epochs}"]),
        runs / "scratch_same_budget.log"), 1)
    result["scratch-at-finetune-budget"] = evaluate("retrieval", data, scratch_dir, runs / "scratch_same_budget.json")


def summarise(worlds: list[dict]) -> dict:
    table: dict = {}
    for name, key in HEADLINE.items():
        values = [world[name][key] for world in worlds if name in world]
        if values:
            table[name] = {"metric": key, "worlds": len(values), "per_world": [round(v, 2) for v in values],
                           "mean": round(statistics.mean(values), 2),
                           "stdev": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0}
    return table


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1001, 1002, 1003])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--no-bare", action="store_true",
                        help="skip the bare reference loop (its result does not depend on the project's defaults, "
                             "so re-measuring a changed recipe need not repeat it)")
    args = parser.parse_args(argv)
    used = TUNING_SEEDS.intersection(args.seeds)
    if used:
        raise SystemExit(f"seeds {sorted(used)} chose the defaults; held-out figures need other seeds")
    sys.path.insert(0, str(ROOT))
    worlds = []
    for seed in args.seeds:  # partial results are kept after each world
        worlds.append(one_world(seed, args.out, args.tasks, bare=not args.no_bare))
        (args.out / "heldout_partial.json").write_text(json.dumps(worlds, indent=2) + "\n")
    report = {"seeds": args.seeds, "summary": summarise(worlds), "worlds": worlds}
    (args.out / "heldout.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"seeds": args.seeds, "summary": report["summary"]}, indent=2))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
