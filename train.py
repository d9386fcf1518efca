"""Train any task: `accelerate launch train.py --task T --data DATA --output-dir OUT [...] [section.key=value ...]`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from violet.config import save_config
from violet.data.text import load_tokenizer
from violet.engine.checkpoint import TOKENIZER_DIR, load_run_config
from violet.engine.trainer import Trainer
from violet.models import PRESETS
from violet.runtime import build_accelerator, build_config, require_prepared, setup_logging
from violet.tasks import TASKS, get_task


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False)  # --out must not mean --output-dir
    parser.add_argument("--task", required=True, choices=sorted(TASKS))
    parser.add_argument("--data", required=True, help="a data directory prepared with `python -m prepare DATA`")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--model", choices=sorted(PRESETS), help="model preset (default tiny; with --init: the checkpoint's)")
    parser.add_argument("--config", help="YAML file with config sections (model, data, train, objective, eval)")
    parser.add_argument("--init", help="checkpoint directory to initialise from (e.g. a pretraining run)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --output-dir")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-4 model.width=256")
    return parser.parse_intermixed_args(argv)  # dotted overrides may come before or after flags


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    task_cls = get_task(args.task)
    flags = {"train": {"max_steps": args.max_steps, "batch_size": args.batch_size}}
    init_model = None
    if args.init:  # fine-tuning keeps the architecture and vocabulary of the checkpoint it starts from
        init_model = load_run_config(Path(args.init)).model
        if args.model and args.model != init_model.preset:
            raise SystemExit(f"--model {args.model} conflicts with --init {args.init}, a {init_model.preset!r} model: "
                             "the architecture comes from the checkpoint; drop --model, or train without --init")
    config = build_config(task_cls, args.model or "tiny", args.config, flags, args.overrides, init_model)
    require_prepared(args.data)
    config.task, config.data.data_dir, config.output_dir = args.task, args.data, args.output_dir
    config.init, config.resume = args.init or "", args.resume
    tokenizer_source = str(Path(config.init) / TOKENIZER_DIR) if config.init else config.model.tokenizer

    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    accelerator = build_accelerator(config, str(output_dir))
    setup_logging(accelerator)
    accelerator.print(config.to_json())
    if accelerator.is_main_process:
        save_config(config, output_dir / "config.json")
    task = task_cls(config, load_tokenizer(tokenizer_source))
    return Trainer(config, accelerator, task).train()


if __name__ == "__main__":
    main(sys.argv[1:])
