"""Evaluate a checkpoint: `python evaluate.py --task T --data DATA --checkpoint CKPT [--split test] [--zero-shot]`.

Prints a table and writes JSON with the metrics and the resolved evaluation setup (checkpoint, split file
hash, frames, sampling, re-ranking), so a number can always be reproduced. `--predictions FILE.jsonl` also
writes one JSON object per query (what the model answered, computed in the same pass as the metrics) and
`--html FILE.html` one self-contained page to look at them, failures first.
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path

from violet.config import ConfigError, RunConfig, apply_overrides, parse_dotted
from violet.data.layout import SUMMARY_FILENAME, default_hf_dir
from violet.data.text import load_tokenizer
from violet.distributed import progress_bars
from violet.engine.rundir import RunDir, RunDirError
from violet.engine.weights import load_weights
from violet.html_report import write_report
from violet.runtime import build_accelerator, drop_unset, require_prepared, setup_logging
from violet.tasks import TASKS, get_task


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False)  # --out must not mean --output-dir
    parser.add_argument("--task", required=True, choices=sorted(TASKS))
    parser.add_argument("--data", required=True)
    parser.add_argument("--checkpoint", required=True, help="an output directory of train.py")
    parser.add_argument("--split", default="test")
    parser.add_argument("--zero-shot", action="store_true",
                        help="evaluate a checkpoint trained for another task (e.g. pretrain) without fine-tuning")
    parser.add_argument("--rerank-k", help="retrieval: re-rank top-k with the VTM head; 0 = dual encoder, 'all'")
    parser.add_argument("--num-frames", type=int, help="frames per clip (default: as trained)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--output", help="metrics JSON path (default: CKPT/eval_<task>_<split>.json)")
    parser.add_argument("--predictions", help="write one JSON object per query to this .jsonl file")
    parser.add_argument("--top-k", type=int, default=10, help="videos (retrieval) or answers (qa-oe) per query")
    parser.add_argument("--html", help="write a self-contained HTML page of the predictions, failures first")
    parser.add_argument("--html-max", type=int, default=200, help="most query cards on the HTML page")
    parser.add_argument("overrides", nargs="*", help="dotted overrides of data/eval settings")
    return parser.parse_intermixed_args(argv)  # dotted overrides may come before or after flags


def split_file_hash(data_dir: Path, kind: str, split: str) -> str | None:
    summary = default_hf_dir(data_dir) / SUMMARY_FILENAME
    if not summary.exists():
        return None
    return json.loads(summary.read_text()).get("source_sha256", {}).get(f"annotations/{kind}_{split}.jsonl")


def evaluation_config(args: argparse.Namespace, run: RunDir, task_cls: type, data_dir: Path) -> RunConfig:
    """The run's config with this evaluation's data, split and flags on top."""
    try:
        config = run.load_config()
    except RunDirError as error:
        raise SystemExit(str(error)) from None
    if config.task != args.task and not args.zero_shot:
        raise SystemExit(f"{run.path} was trained for {config.task!r}; pass --zero-shot to evaluate it on {args.task!r}")
    if args.zero_shot and not task_cls.supports_zero_shot:
        raise SystemExit(f"task {args.task!r} has no zero-shot mode (it needs a trained answer classifier)")
    flags = {"eval": {"rerank_k": args.rerank_k, "num_frames": args.num_frames, "split": args.split},
             "train": {"eval_batch_size": args.batch_size}}
    try:
        apply_overrides(config, drop_unset(flags))
        apply_overrides(config, parse_dotted(args.overrides))
    except ConfigError as error:
        raise SystemExit(f"config error: {error}") from None
    config.data.data_dir = str(data_dir)
    return config


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.top_k < 1 or args.html_max < 1:
        raise SystemExit("--top-k and --html-max must be at least 1")
    task_cls = get_task(args.task)
    if (args.predictions or args.html) and "predictions" not in inspect.signature(task_cls.evaluate).parameters:
        raise SystemExit(f"task {args.task!r} cannot write per-query predictions (--predictions, --html)")
    data_dir = require_prepared(args.data)
    run = RunDir(args.checkpoint)
    config = evaluation_config(args, run, task_cls, data_dir)
    trained_for, config.task = config.task, args.task
    accelerator = build_accelerator(config, project_dir=None)
    setup_logging(accelerator)
    extra = {"answers": task_cls.load_answers(run.path)} if hasattr(task_cls, "load_answers") else {}
    task = task_cls(config, load_tokenizer(run.tokenizer_dir), **extra)
    model = task.build_model()
    load_weights(model, run.path, required_heads=task.heads)
    model = accelerator.prepare(model)
    model.eval()
    with accelerator.autocast(), progress_bars():
        if args.predictions or args.html:
            metrics = task.evaluate(model, accelerator, args.split, predictions=True, top_k=args.top_k)
        else:
            metrics = task.evaluate(model, accelerator, args.split)
    rows = metrics.pop("predictions", None)  # per-row output goes to its own file, never into the metrics
    metrics["rerank_source"] = rerank_source(run, args.rerank_k) if "rerank_k" in metrics else None
    metrics["setup"] = {
        "task": args.task, "split": args.split, "checkpoint": str(run.path.resolve()), "trained_for": trained_for,
        "zero_shot": args.zero_shot, "split_sha256": split_file_hash(data_dir, task.annotation_kind, args.split),
        "num_frames": task.eval_num_frames(), "frame_sampling": "uniform segment middles (deterministic)",
        "image_size": config.model.image_size, "rerank_k": config.eval.rerank_k, "model": config.model.preset,
        "processes": accelerator.num_processes, "precision": accelerator.mixed_precision,
    }
    if accelerator.is_main_process:
        output = Path(args.output) if args.output else run.eval_path(args.task, args.split)
        output.write_text(json.dumps(metrics, indent=2))
        print_table(args.task, args.split, metrics)
        print(f"metrics written to {output}")
        write_predictions(args, metrics, rows, task.store_dir)
    return metrics


def write_predictions(args: argparse.Namespace, metrics: dict, rows: list[dict] | None, store_dir: Path) -> None:
    """The --predictions file (one JSON object per line, row order) and the --html page."""
    if args.predictions:
        with open(args.predictions, "w", encoding="utf-8") as out:
            out.writelines(json.dumps(row) + "\n" for row in rows)
        print(f"{len(rows)} predictions written to {args.predictions}")
    if args.html:
        shown = write_report(Path(args.html), metrics, rows, store_dir, max_cards=args.html_max)
        print(f"report of {shown} of {len(rows)} queries written to {args.html}")


def rerank_source(run: RunDir, flag: str | None) -> str:
    """Where the re-ranking depth came from, said with every retrieval result."""
    if flag is not None:
        return "--rerank-k"
    measured = run.evaluation_choice()
    if measured is not None:
        where = measured.get("split", "")
        return f"chosen by the run on {where}" if where else f"set by the run: {measured.get('reason', '')}"
    return "the run's config (no choice recorded)"


def print_table(task: str, split: str, metrics: dict) -> None:
    rows = [(key, value) for key, value in metrics.items() if key not in ("setup", "predictions")]
    width = max(len(key) for key, _ in rows)
    print(f"\n{task} on {split}")
    for key, value in rows:
        print(f"  {key:<{width}}  {value:.2f}" if isinstance(value, float) else f"  {key:<{width}}  {value}")


if __name__ == "__main__":
    main(sys.argv[1:])
