"""One Trainer for every task: Accelerate loop with accumulation, checkpoint/resume, logging and evaluation.

The step is split in two: `forward_backward` (the task's loss, then backward) and `train_step` (accumulation
boundary, clipping, non-finite check, optimizer/scheduler, logging). Resuming restores model, optimizer,
scheduler, RNG and the Trainer's counters, then skips the batches of the interrupted epoch already consumed,
so a resumed run sees the same batches in the same order as an uninterrupted one.
"""
from __future__ import annotations

import json
import logging
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import get_scheduler

from violet.config import RunConfig, save_config
from violet.engine.checkpoint import (
    CONFIG, TOKENIZER_DIR, checkpoint_dirs, export_weights, load_weights, mark_complete, prune_checkpoints,
)
from violet.models.pretrained import apply_pretrained_init
from violet.tasks.base import Task

logger = logging.getLogger(__name__)
TRAIN_LOG = "train_log.jsonl"
EVALUATION_CHOICE = "evaluation_choice.json"


@dataclass
class TrainerState:
    """Counters saved with every checkpoint; `batches_in_epoch` counts micro-batches, not optimizer steps."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    samples_seen: int = 0
    bad_samples: int = 0
    seed: int = 0

    def state_dict(self) -> dict[str, int]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key, value in state.items():
            setattr(self, key, int(value))


def build_optimizer(model: torch.nn.Module, config: RunConfig) -> torch.optim.Optimizer:
    """AdamW with no weight decay on biases, norms, embeddings and the names the model lists."""
    skip = model.no_weight_decay()
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim < 2 or name in skip else decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": config.train.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.train.lr, betas=(0.9, 0.98), eps=1e-6)


def _logged_step(line: str) -> float:
    """The step of one train-log line; a line torn by a kill mid-write (or blank) counts as after any checkpoint."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


class GeneratorState:
    """Checkpointable generator that draws masks and hard negatives, one stream per rank.

    Accelerate writes custom state from the main process only, so every rank's state is gathered into the
    file; a resume on a different number of processes reseeds from (seed, step, rank) instead.
    """

    def __init__(self, generator: torch.Generator, seed: int, trainer_state: TrainerState) -> None:
        self.generator = generator
        self.seed = seed
        self.trainer_state = trainer_state

    def state_dict(self) -> dict[str, list[torch.Tensor]]:
        own = self.generator.get_state()
        if not (dist.is_available() and dist.is_initialized()):
            return {"per_rank": [own]}
        states: list[torch.Tensor | None] = [None] * dist.get_world_size()
        dist.all_gather_object(states, own)
        return {"per_rank": states}

    def load_state_dict(self, state: dict[str, list[torch.Tensor]]) -> None:
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if len(state["per_rank"]) == world:
            self.generator.set_state(state["per_rank"][rank])
        else:
            logger.warning("resuming on %d processes from a %d-process checkpoint: reseeding mask RNG", world,
                           len(state["per_rank"]))
            self.generator.manual_seed(self.seed + 1000 * self.trainer_state.step + rank)


class SharedGeneratorState:
    """Checkpointable generator whose state is identical on every rank (the task's global-batch draws)."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["state"])


class Trainer:
    def __init__(self, config: RunConfig, accelerator: Accelerator, task: Task) -> None:
        self.config = config
        self.accelerator = accelerator
        self.task = task
        self.output_dir = Path(config.output_dir)
        self.state = TrainerState(seed=config.train.seed)
        self.last_checkpoint: Path | None = None
        train = config.train

        self.train_loader = task.train_loader()
        self.train_dataset = self.train_loader.dataset
        # A streaming dataset (data.streaming) splits rows across ranks itself and saves its own position.
        self.streaming = hasattr(self.train_dataset, "load_state_dict")
        batches_per_epoch = len(self.train_loader) // accelerator.num_processes
        if batches_per_epoch == 0:
            raise ValueError(
                f"the train split has {len(self.train_loader.dataset)} rows, fewer than one batch of "
                f"{train.batch_size} x {accelerator.num_processes} processes; lower --batch-size"
            )
        steps_per_epoch = max(1, batches_per_epoch // train.grad_accum)
        self.total_steps = train.max_steps or steps_per_epoch * train.epochs
        self.model = task.build_model()
        if config.init:
            load_weights(self.model, Path(config.init))
        else:  # a run from scratch may start its encoders from image/video/BERT checkpoints (model.*_init)
            for part, report in apply_pretrained_init(self.model).items():  # full key lists are logged there
                counts = ", ".join(f"{len(v)} {k}" for k, v in report.items() if isinstance(v, (list, tuple)))
                accelerator.print(f"{part} initialised from a {report.get('format')} checkpoint ({counts})")
        self.optimizer = build_optimizer(self.model, config)
        # Accelerate's prepared scheduler advances once per process at every optimizer step, so the schedule is
        # laid out in process-steps to end exactly at total_steps.
        scale = accelerator.num_processes
        self.scheduler = get_scheduler(
            train.lr_schedule, self.optimizer, num_warmup_steps=int(train.warmup_ratio * self.total_steps) * scale,
            num_training_steps=self.total_steps * scale,
        )
        if self.streaming:  # not prepared: Accelerate would shard or dispatch the IterableDataset a second time
            self.model, self.optimizer, self.scheduler = accelerator.prepare(self.model, self.optimizer, self.scheduler)
        else:
            self.model, self.optimizer, self.train_loader, self.scheduler = accelerator.prepare(
                self.model, self.optimizer, self.train_loader, self.scheduler
            )
        self.generator = torch.Generator(device=accelerator.device)
        self.generator.manual_seed(train.seed + accelerator.process_index)
        accelerator.register_for_checkpointing(self.state)
        accelerator.register_for_checkpointing(GeneratorState(self.generator, train.seed, self.state))
        accelerator.register_for_checkpointing(SharedGeneratorState(task.global_generator))
        if self.streaming:  # registered last, so the indices of the states above stay the same
            accelerator.register_for_checkpointing(self.train_dataset)
        global_batch = train.batch_size * train.grad_accum * accelerator.num_processes
        self.check_deepspeed_batch(global_batch)
        accelerator.print(
            f"task={task.name} train rows={len(task.train_rows())} steps={self.total_steps} "
            f"({steps_per_epoch}/epoch) global batch={global_batch} "
            f"(= {train.batch_size} per device x {train.grad_accum} accumulation x {accelerator.num_processes} "
            f"processes) lr={train.lr} precision={accelerator.mixed_precision} "
            f"grad checkpointing={'on' if config.model.grad_checkpointing else 'off'} "
            f"backend={accelerator.distributed_type.name.lower()}{self.zero_stage_note()}"
        )

    def check_deepspeed_batch(self, global_batch: int) -> None:
        """DeepSpeed's batch arithmetic must be ours ("auto" fields): fail at start, not silently."""
        plugin = self.accelerator.state.deepspeed_plugin
        if plugin is None:
            return
        ds = plugin.deepspeed_config
        found = (ds.get("train_micro_batch_size_per_gpu"), ds.get("gradient_accumulation_steps"),
                 ds.get("train_batch_size"))
        wanted = (self.config.train.batch_size, self.config.train.grad_accum, global_batch)
        if found != wanted:
            raise ValueError(
                f"DeepSpeed config batch (micro, accumulation, global) = {found} but the run config gives {wanted}; "
                'use "auto" for these fields in the DeepSpeed JSON so train.* stays the single source of truth'
            )

    def zero_stage_note(self) -> str:
        plugin = self.accelerator.state.deepspeed_plugin
        if plugin is None:
            return ""
        zero = plugin.deepspeed_config.get("zero_optimization", {})
        offload = [part for part in ("optimizer", "param")
                   if zero.get(f"offload_{part}", {}).get("device", "none") not in ("none", None)]
        return f" (ZeRO-{zero.get('stage', 0)}{', offload ' + '+'.join(offload) if offload else ''})"

    # ----- checkpoints -----
    def save_checkpoint(self) -> Path:
        path = self.output_dir / "checkpoints" / f"step_{self.state.step}"
        if path == self.last_checkpoint:
            return path  # the last step was also a periodic save
        self.last_checkpoint = path
        self.accelerator.save_state(str(path))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            mark_complete(path, self.state.step)
            prune_checkpoints(self.output_dir, self.config.train.keep_checkpoints)
        return path

    def maybe_resume(self) -> None:
        if not self.config.resume:
            return
        found = checkpoint_dirs(self.output_dir)
        if not found:
            self.accelerator.print(f"--resume: no finished checkpoint in {self.output_dir}/checkpoints, starting at step 0")
            return
        self.accelerator.load_state(str(found[-1]))
        if self.accelerator.is_main_process:  # drop log lines of steps after the checkpoint: they are redone
            log_path = self.output_dir / TRAIN_LOG
            if log_path.exists():
                kept = [line for line in log_path.read_text().splitlines() if _logged_step(line) <= self.state.step]
                log_path.write_text("".join(line + "\n" for line in kept))
        self.accelerator.print(
            f"resumed from {found[-1]} at step {self.state.step}, epoch {self.state.epoch}, "
            f"batch {self.state.batches_in_epoch}"
        )

    def save_final(self, checkpoint: Path) -> None:
        """Weights (one safetensors file), resolved config, tokenizer and task files: what evaluate.py loads."""
        accelerator = self.accelerator
        export_weights(accelerator, self.model, self.output_dir, checkpoint)
        if accelerator.is_main_process:
            save_config(self.config, self.output_dir / CONFIG)
            self.task.tokenizer.save_pretrained(str(self.output_dir / TOKENIZER_DIR))
            self.task.save_artifacts(self.output_dir)

    # ----- the step -----
    def forward_backward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        with self.accelerator.autocast():
            loss, logs = self.task.training_step(self.model, batch, self.generator)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite loss {loss.item()} at step {self.state.step} ({ {k: float(v) for k, v in logs.items()} }); "
                "lower train.lr or check the data; the last checkpoint is intact"
            )
        self.accelerator.backward(loss)  # Accelerate/DeepSpeed scale by accumulation steps themselves
        return loss, logs

    def train_step(self, batch: dict[str, Any]) -> dict[str, float] | None:
        """One micro-batch; returns logs when it completed an optimizer step."""
        with self.accelerator.accumulate(self.model):
            loss, logs = self.forward_backward(batch)
            grad_norm = None
            if self.accelerator.sync_gradients:
                if self.state.step == 0:
                    self.report_parameters_without_grad()
                # train.grad_clip <= 0 means "do not clip": a max norm of 0 would scale every gradient to zero.
                max_norm = self.config.train.grad_clip if self.config.train.grad_clip > 0 else float("inf")
                grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        if not self.accelerator.sync_gradients:
            return None
        # Logged values are means over ranks, i.e. over the global batch, so they do not depend on world size.
        names = ["loss", *logs]
        values = torch.stack([loss.detach().float(), *(torch.as_tensor(v).detach().float().to(loss.device)
                                                        for v in logs.values())])
        values = self.accelerator.reduce(values, reduction="mean") if self.accelerator.num_processes > 1 else values
        out = {f"train/{name}": float(value) for name, value in zip(names, values.tolist())}
        out["train/lr"] = self.scheduler.get_last_lr()[0]
        if grad_norm is not None:
            out["train/grad_norm"] = float(grad_norm)
        return out

    def report_parameters_without_grad(self) -> None:
        """Heads that got no gradient are a silent bug: name them after the first backward."""
        if self.accelerator.distributed_type.name == "DEEPSPEED":
            return  # gradients live in DeepSpeed's partitioned buffers, not in .grad
        unused = [name for name, p in self.model.named_parameters() if p.requires_grad and p.grad is None]
        if unused:
            logger.warning("parameters with no gradient after the first step: %s", ", ".join(unused[:20]))

    # ----- the loop -----
    def train(self) -> dict[str, Any]:
        accelerator, config = self.accelerator, self.config
        self.maybe_resume()
        accelerator.init_trackers("tensorboard", config={"task": config.task, "model": config.model.preset})
        progress = tqdm(total=self.total_steps, initial=self.state.step, disable=not accelerator.is_main_process,
                        desc=f"{config.task}", dynamic_ncols=True)
        window_start, data_wait, clips = time.perf_counter(), 0.0, 0
        while self.state.step < self.total_steps:
            self.train_loader.set_epoch(self.state.epoch)
            self.train_dataset.set_epoch(self.state.epoch)
            loader = self.train_loader
            if self.state.batches_in_epoch and not self.streaming:  # streaming resumes itself, reading nothing
                loader = accelerator.skip_first_batches(self.train_loader, self.state.batches_in_epoch)
            fetch_start = time.perf_counter()
            for batch in loader:
                data_wait += time.perf_counter() - fetch_start
                self.state.batches_in_epoch += 1
                self.count_bad_samples(batch)
                if "frames" not in batch:
                    fetch_start = time.perf_counter()
                    continue
                clips += batch["frames"].shape[0] * accelerator.num_processes
                self.state.samples_seen += batch["frames"].shape[0] * accelerator.num_processes
                logs = self.train_step(batch)
                if logs is not None:
                    self.state.step += 1
                    progress.update(1)
                    progress.set_postfix(loss=f"{logs['train/loss']:.3f}")
                    if self.state.step % config.train.log_every == 0 or self.state.step == self.total_steps:
                        elapsed = time.perf_counter() - window_start
                        logs.update(self.throughput_logs(clips, elapsed, data_wait))
                        accelerator.log(logs, step=self.state.step)
                        self.append_train_log(logs)
                        window_start, data_wait, clips = time.perf_counter(), 0.0, 0
                    if config.train.save_every and self.state.step % config.train.save_every == 0:
                        self.save_checkpoint()
                    if config.train.eval_every and self.state.step % config.train.eval_every == 0:
                        self.evaluate_and_log("val")
                    if self.state.step >= self.total_steps:
                        break
                fetch_start = time.perf_counter()
            else:
                self.state.epoch += 1
                self.state.batches_in_epoch = 0
        progress.close()
        checkpoint = self.save_checkpoint()
        self.tune_evaluation()
        self.save_final(checkpoint)
        metrics = self.evaluate_and_log("val")
        accelerator.end_training()
        return metrics

    def tune_evaluation(self) -> None:
        """Let the task choose its evaluation settings on held-out data; the choice lands in the saved config and
        in OUT/evaluation_choice.json, which evaluate.py reports."""
        self.model.eval()
        with self.accelerator.autocast():
            choice = self.task.tune_evaluation(self.model, self.accelerator)
        self.model.train()
        if choice is not None and self.accelerator.is_main_process:
            (self.output_dir / EVALUATION_CHOICE).write_text(json.dumps(choice, indent=2) + "\n")
            self.accelerator.print(f"evaluation settings chosen on held-out data: {json.dumps(choice)}")

    def append_train_log(self, logs: dict[str, float]) -> None:
        """OUT/train_log.jsonl: the same numbers as TensorBoard, readable without it (reference logs)."""
        if self.accelerator.is_main_process:
            with open(self.output_dir / TRAIN_LOG, "a") as handle:
                handle.write(json.dumps({"step": self.state.step, **logs}) + "\n")

    def count_bad_samples(self, batch: dict[str, Any]) -> None:
        errors = batch.get("errors", [])
        if not errors:
            return
        self.state.bad_samples += len(errors)
        for error in errors:
            logger.warning("skipped unreadable clip: %s", error)
        limit = self.config.data.max_bad_samples
        if self.state.bad_samples > limit:
            raise RuntimeError(
                f"{self.state.bad_samples} unreadable clips (limit data.max_bad_samples={limit}); "
                "re-run `python -m prepare DATA` and check clip_store/failed.jsonl"
            )

    def throughput_logs(self, clips: int, elapsed: float, data_wait: float) -> dict[str, float]:
        logs = {"perf/clips_per_s": clips / max(elapsed, 1e-9), "perf/data_wait_fraction": data_wait / max(elapsed, 1e-9)}
        if logs["perf/data_wait_fraction"] > 0.5 and self.state.step > self.config.train.log_every:
            logger.warning("data loading takes %.0f%% of step time: raise data.num_workers", 100 * logs["perf/data_wait_fraction"])
        if torch.cuda.is_available():
            logs["perf/gpu_max_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        logs["perf/host_max_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        return logs

    def evaluate_and_log(self, split: str) -> dict[str, Any]:
        if not self.task.has_split(split):
            self.accelerator.print(f"no {split} split for {self.task.annotation_kind}: skipping evaluation in training")
            return {}
        self.model.eval()
        with self.accelerator.autocast():
            metrics = self.task.evaluate(self.model, self.accelerator, split)
        self.model.train()
        self.accelerator.log({f"{split}/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))},
                             step=self.state.step)
        if self.accelerator.is_main_process:
            (self.output_dir / f"metrics_{split}.json").write_text(json.dumps(metrics, indent=2))
            self.accelerator.print(f"{split}: " + ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                                                            for k, v in metrics.items()))
        return metrics
