"""Evaluate a checkpoint: `python evaluate.py --task T --data DATA --checkpoint CKPT [--split test] [--zero-shot]`.

Prints a table and writes JSON with the metrics and the resolved evaluation setup (checkpoint, split file
hash, frames, sampling, re-ranking), so a number can always be reproduced.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from violet.config import apply_overrides, parse_dotted
from violet.data.text import load_tokenizer
from violet.engine.checkpoint import TOKENIZER_DIR, load_run_config, load_weights
from violet.engine.trainer import EVALUATION_CHOICE
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
    parser.add_argument("overrides", nargs="*", help="dotted overrides of data/eval settings")
    return parser.parse_intermixed_args(argv)  # dotted overrides may come before or after flags


def split_file_hash(data_dir: Path, kind: str, split: str) -> str | None:
    summary = data_dir / "hf" / "summary.json"
    if not summary.exists():
        return None
    return json.loads(summary.read_text()).get("source_sha256", {}).get(f"annotations/{kind}_{split}.jsonl")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    task_cls = get_task(args.task)
    data_dir = require_prepared(args.data)
    checkpoint = Path(args.checkpoint)
    config = load_run_config(checkpoint)
    trained_for = config.task
    if trained_for != args.task and not args.zero_shot:
        raise SystemExit(f"{checkpoint} was trained for {trained_for!r}; pass --zero-shot to evaluate it on {args.task!r}")
    if args.zero_shot and not task_cls.supports_zero_shot:
        raise SystemExit(f"task {args.task!r} has no zero-shot mode (it needs a trained answer classifier)")
    config.task, config.data.data_dir = args.task, str(data_dir)
    config.eval.split = args.split
    flags = {"eval": {"rerank_k": args.rerank_k, "num_frames": args.num_frames},
             "train": {"eval_batch_size": args.batch_size}}
    apply_overrides(config, drop_unset(flags))
    apply_overrides(config, parse_dotted(args.overrides))

    accelerator = build_accelerator(config, project_dir=None)
    setup_logging(accelerator)
    tokenizer = load_tokenizer(checkpoint / TOKENIZER_DIR)
    extra = {"answers": task_cls.load_answers(checkpoint)} if hasattr(task_cls, "load_answers") else {}
    task = task_cls(config, tokenizer, **extra)
    model = task.build_model()
    load_weights(model, checkpoint, required_heads=task.heads)
    model = accelerator.prepare(model)
    model.eval()
    with accelerator.autocast():
        metrics = task.evaluate(model, accelerator, args.split)
    metrics["rerank_source"] = rerank_source(checkpoint, args.rerank_k) if "rerank_k" in metrics else None
    metrics["setup"] = {
        "task": args.task, "split": args.split, "checkpoint": str(checkpoint.resolve()), "trained_for": trained_for,
        "zero_shot": args.zero_shot, "split_sha256": split_file_hash(data_dir, task.annotation_kind, args.split),
        "num_frames": task.eval_num_frames(), "frame_sampling": "uniform segment middles (deterministic)",
        "image_size": config.model.image_size, "rerank_k": config.eval.rerank_k, "model": config.model.preset,
        "processes": accelerator.num_processes, "precision": accelerator.mixed_precision,
    }
    if accelerator.is_main_process:
        output = Path(args.output) if args.output else checkpoint / f"eval_{args.task}_{args.split}.json"
        output.write_text(json.dumps(metrics, indent=2))
        print_table(args.task, args.split, metrics)
        print(f"metrics written to {output}")
    return metrics


def rerank_source(checkpoint: Path, flag: str | None) -> str:
    """Where the re-ranking depth came from, said with every retrieval result."""
    if flag is not None:
        return "--rerank-k"
    choice = checkpoint / EVALUATION_CHOICE
    if choice.exists():
        measured = json.loads(choice.read_text())
        where = measured.get("split", "")
        return f"chosen by the run on {where}" if where else f"set by the run: {measured.get('reason', '')}"
    return "the run's config (no choice recorded)"


def print_table(task: str, split: str, metrics: dict) -> None:
    rows = [(key, value) for key, value in metrics.items() if key != "setup"]
    width = max(len(key) for key, _ in rows)
    print(f"\n{task} on {split}")
    for key, value in rows:
        print(f"  {key:<{width}}  {value:.2f}" if isinstance(value, float) else f"  {key:<{width}}  {value}")


if __name__ == "__main__":
    main(sys.argv[1:])
