"""What the Trainer costs over a bare loop: the same task, model, optimizer, schedule, loader and batch.

Both sides run in one process, alternating (Trainer, bare, bare, Trainer per round, so load that drifts during a
round hits both alike). Each side trains `--steps` optimizer steps from the same seed; the first `--warmup` steps
(start-up, first batches, allocator growth) are left out of the timing.
- Trainer: `violet.engine.Trainer` as `train.py` runs it (Accelerate, global-batch logging, throughput and FLOP
  counting, checkpoint state), with evaluation during training, visuals and checkpoints off, as a user would set
  for a timing run. Its seconds per step come from the throughput windows it logs (`train_log.jsonl`).
- bare: `for batch in loader: loss = task.training_step(...); loss.backward(); clip; step; schedule; zero_grad`.
Prints one JSON object; `ratio` is the median over rounds of (Trainer s/step) / (bare s/step) within a round.

    python benchmarks/trainer_overhead.py --data DATA [--task retrieval] [--steps 60] [--warmup 10] [--rounds 3]

DATA is prepared data (`python -m prepare.demo D && python -m prepare D` makes the demo set).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from violet.data.text import load_tokenizer  # noqa: E402
from violet.engine.optim import build_optimizer, build_scheduler  # noqa: E402
from violet.engine.trainer import Trainer  # noqa: E402
from violet.runtime import build_accelerator, build_config  # noqa: E402
from violet.tasks import get_task  # noqa: E402


def setup(args: argparse.Namespace, out: Path):
    """Config, accelerator and task exactly as train.py builds them, for a timing run."""
    task_cls = get_task(args.task)
    config = build_config(
        task_cls, model=args.model, config_file=None,
        dotted=["train.eval_every=0", "train.save_every=0", "train.visual_every=0", "train.log_with=none",
                f"train.log_every={args.warmup}", "train.progress=false", "eval.split=val", *args.overrides],
        flags={"train": {"max_steps": args.steps, "batch_size": args.batch_size}},
        init="", data_dir=str(args.data), output_dir=str(out), resume=False)
    accelerator = build_accelerator(config, str(out))
    return config, accelerator, task_cls(config, load_tokenizer(config.model.tokenizer))


def trainer_seconds_per_step(args: argparse.Namespace) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        config, accelerator, task = setup(args, Path(tmp) / "run")
        torch.manual_seed(config.train.seed)
        Trainer(config, accelerator, task).train()
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "train_log.jsonl").read_text().splitlines()]
    # Windows of `warmup` steps each: drop the first (start-up), time the rest from their throughput.
    steady = rows[1:]
    seconds = sum(args.warmup * config.train.batch_size / row["perf/clips_per_s"] for row in steady)
    return seconds / (args.warmup * len(steady)), rows[-1]["train/loss"]


def bare_seconds_per_step(args: argparse.Namespace) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        config, _, task = setup(args, Path(tmp) / "run")
        torch.manual_seed(config.train.seed)
        model = task.build_model()
        optimizer = build_optimizer(model, config)
        scheduler = build_scheduler(optimizer, config, args.steps, 1)
        generator = torch.Generator().manual_seed(config.train.seed)
        loader = task.train_loader()
        batches = itertools.chain.from_iterable(iter(loader) for _ in itertools.count())
        max_norm = config.train.grad_clip if config.train.grad_clip > 0 else float("inf")
        model.train()
        for step in range(args.steps):
            if step == args.warmup:
                started = time.perf_counter()
            loss, _ = task.training_step(model, next(batches), generator)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            last = loss.item()  # the Trainer reads its loss every step too (for the logs)
        return (time.perf_counter() - started) / (args.steps - args.warmup), last


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--task", default="retrieval")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10, help="steps left out of the timing (also the log window)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="dotted config overrides for both sides")
    args = parser.parse_args(argv)
    if args.steps % args.warmup or args.steps < 2 * args.warmup:
        raise SystemExit("--steps must be a multiple of --warmup and at least twice it")
    rounds = []
    for _ in range(args.rounds):
        trainer_a, loss_trainer = trainer_seconds_per_step(args)
        bare_a, loss_bare = bare_seconds_per_step(args)
        bare_b, _ = bare_seconds_per_step(args)
        trainer_b, _ = trainer_seconds_per_step(args)
        rounds.append({"trainer_s_per_step": round((trainer_a + trainer_b) / 2, 4),
                       "bare_s_per_step": round((bare_a + bare_b) / 2, 4),
                       "ratio": round((trainer_a + trainer_b) / (bare_a + bare_b), 4),
                       "final_loss_trainer": round(loss_trainer, 4), "final_loss_bare": round(loss_bare, 4)})
    result = {
        "ratio": statistics.median(r["ratio"] for r in rounds),
        "trainer_s_per_step": statistics.median(r["trainer_s_per_step"] for r in rounds),
        "bare_s_per_step": statistics.median(r["bare_s_per_step"] for r in rounds),
        "task": args.task, "model": args.model, "batch_size": args.batch_size, "steps": args.steps,
        "warmup": args.warmup, "rounds": rounds, "cpu_cores": os.cpu_count(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2), "torch": torch.__version__,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
