"""Train any task: `accelerate launch train.py --task T --data DATA --output-dir OUT [...] [section.key=value ...]`."""
from __future__ import annotations

import argparse
import sys

from violet.config import ConfigError
from violet.data.text import load_tokenizer
from violet.engine.resume import adapt_batch_to_processes, launched_processes
from violet.engine.rundir import RunDir, RunDirError
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
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in an --output-dir that holds an earlier run (its checkpoints are deleted)")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-4 model.width=256")
    return parser.parse_intermixed_args(argv)  # dotted overrides may come before or after flags


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    task_cls = get_task(args.task)
    try:
        config = build_config(
            task_cls, model=args.model, config_file=args.config, dotted=args.overrides,
            flags={"train": {"max_steps": args.max_steps, "batch_size": args.batch_size}},
            init=args.init or "", data_dir=args.data, output_dir=args.output_dir,
            resume=args.resume,
        )
        # A resume on another process count keeps the saved global batch: decided before the Accelerator exists.
        resized_batch = adapt_batch_to_processes(config, launched_processes()) if args.resume else None
    except (ConfigError, RunDirError) as error:  # a bad key or value is the user's to fix: no traceback
        raise SystemExit(f"config error: {error}") from None
    require_prepared(config.data.data_dir)
    # Fine-tuning keeps the vocabulary of the checkpoint it starts from.
    tokenizer = load_tokenizer(str(RunDir(config.init).tokenizer_dir) if config.init else config.model.tokenizer)
    accelerator = build_accelerator(config, config.output_dir)
    setup_logging(accelerator)
    accelerator.print(config.to_json())
    if resized_batch:
        accelerator.print(resized_batch)
    task = task_cls(config, tokenizer)
    try:
        return Trainer(config, accelerator, task, overwrite=args.overwrite).train()
    except RunDirError as error:  # the directory is another run's, or in use: nothing was written
        raise SystemExit(str(error)) from None


if __name__ == "__main__":
    main(sys.argv[1:])
