"""One Trainer for every task: the Accelerate loop, logging, evaluation; checkpoints go through the Checkpointer.

The step is split in two: `forward_backward` (the task's loss, then backward) and `train_step` (accumulation
boundary, clipping, non-finite check, optimizer/scheduler). The loop reads: step, log, maybe evaluate, maybe
visualise, maybe save. Monitoring (docs/monitoring.md): scalars, the task's visuals and the config as
hyperparameters go to the trackers of `train.log_with`; the first micro-batch's FLOPs are counted for MFU.
Resuming restores model, optimizer, scheduler, RNG and the Trainer's counters, then skips the batches of the
interrupted epoch already consumed, so a resumed run sees the same batches in the same order as an uninterrupted
one. The Trainer knows tasks only through the TrainableTask protocol.
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from violet.config import RunConfig
from violet.distributed import progress_bars
from violet.engine.checkpointer import Checkpointer
from violet.engine.construction import sharded_construction
from violet.engine.efficiency import Efficiency, batch_tokens, peak_flops
from violet.engine.metadata import run_metadata, throughput_logs
from violet.engine.model_card import model_card
from violet.engine.optim import build_optimizer, build_scheduler
from violet.engine.protocol import TrainableTask
from violet.engine.resume import (
    carry_over,
    flatten,
    refuse_changed_settings,
    restore_group_settings,
    universal_loading,
)
from violet.engine.rundir import RunDir, RunDirError, write_text
from violet.engine.state import GeneratorState, SharedGeneratorState, TrainerState
from violet.engine.tracking import finish_hparams, log_visuals, start_trackers
from violet.engine.train_log import TrainLog
from violet.engine.visuals import draw_visuals
from violet.engine.weights import load_weights
from violet.models.pretrained import apply_pretrained_init

logger = logging.getLogger(__name__)


class Trainer:
    def __init__(self, config: RunConfig, accelerator: Accelerator, task: TrainableTask, overwrite: bool = False
                 ) -> None:
        self.config = config
        self.overwrite = overwrite  # start over in a directory that holds an earlier run
        self.accelerator = accelerator
        self.task = task
        self.run = RunDir(config.output_dir)
        self.state = TrainerState(seed=config.train.seed, num_processes=accelerator.num_processes)
        self.checkpointer = Checkpointer(accelerator, self.run, config.train.save_every, config.train.keep_checkpoints,
                                         describe=self.write_run_files)
        self.train_log = TrainLog(self.run.train_log, accelerator.is_main_process)
        self.efficiency = Efficiency(peak=None, num_processes=accelerator.num_processes)
        self.visualised_at = -1  # the step of the last visuals
        self.build_data()
        self.build_model()
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = build_scheduler(self.optimizer, config, self.total_steps, accelerator.num_processes)
        self.stage_checkpoint = universal_loading(accelerator, config)  # before prepare builds the engine
        if self.streaming:  # not prepared: Accelerate would shard or dispatch the IterableDataset a second time
            self.model, self.optimizer, self.scheduler = accelerator.prepare(self.model, self.optimizer, self.scheduler)
        else:
            self.model, self.optimizer, self.train_loader, self.scheduler = accelerator.prepare(
                self.model, self.optimizer, self.train_loader, self.scheduler)
        self.register_state()
        self.check_deepspeed_batch()
        self.print_setup()

    # ----- building -----
    def build_data(self) -> None:
        train = self.config.train
        self.task.prepare_training()
        self.train_loader = self.task.train_loader()
        self.train_dataset = self.train_loader.dataset
        # A streaming dataset (data.streaming) splits rows across ranks itself and saves its own position.
        self.streaming = hasattr(self.train_dataset, "load_state_dict")
        batches_per_epoch = len(self.train_loader) // self.accelerator.num_processes
        if batches_per_epoch == 0:
            raise ValueError(
                f"the train split has {len(self.train_dataset)} rows, fewer than one batch of "
                f"{train.batch_size} x {self.accelerator.num_processes} processes; lower --batch-size")
        self.steps_per_epoch = max(1, batches_per_epoch // train.grad_accum)
        self.total_steps = train.max_steps or self.steps_per_epoch * train.epochs

    def build_model(self) -> None:
        with sharded_construction(self.accelerator, self.config):  # ZeRO-3: partitioned as it is built
            self.model = self.task.build_model()
        if self.config.init:
            load_weights(self.model, Path(self.config.init))
            return
        # A run from scratch may start its encoders from image/video/BERT checkpoints (model.*_init).
        for part, report in apply_pretrained_init(self.model).items():  # full key lists are logged there
            counts = ", ".join(f"{len(v)} {k}" for k, v in report.items() if isinstance(v, (list, tuple)))
            self.accelerator.print(f"{part} initialised from a {report.get('format')} checkpoint ({counts})")

    def register_state(self) -> None:
        """Everything a resume must restore besides model, optimizer and scheduler."""
        accelerator, seed = self.accelerator, self.config.train.seed
        self.generator = torch.Generator(device=accelerator.device)
        self.generator.manual_seed(seed + accelerator.process_index)
        self.checkpointer.track("trainer", self.state)
        self.checkpointer.track("generator", GeneratorState(self.generator, seed, self.state))
        self.checkpointer.track("global_generator", SharedGeneratorState(self.task.global_generator))
        if self.streaming:
            self.checkpointer.track("data_position", self.train_dataset)

    @property
    def global_batch(self) -> int:
        return self.config.train.batch_size * self.config.train.grad_accum * self.accelerator.num_processes

    def check_deepspeed_batch(self) -> None:
        """DeepSpeed's batch arithmetic must be ours ("auto" fields): fail at start, not silently."""
        plugin = self.accelerator.state.deepspeed_plugin
        if plugin is None:
            return
        ds = plugin.deepspeed_config
        found = (ds.get("train_micro_batch_size_per_gpu"), ds.get("gradient_accumulation_steps"),
                 ds.get("train_batch_size"))
        wanted = (self.config.train.batch_size, self.config.train.grad_accum, self.global_batch)
        if found != wanted:
            raise ValueError(
                f"DeepSpeed config batch (micro, accumulation, global) = {found} but the run config gives {wanted}; "
                'use "auto" for these fields in the DeepSpeed JSON so train.* stays the single source of truth')

    def print_setup(self) -> None:
        train, accelerator = self.config.train, self.accelerator
        plugin = accelerator.state.deepspeed_plugin
        zero = ""
        if plugin is not None:
            settings = plugin.deepspeed_config.get("zero_optimization", {})
            offload = [part for part in ("optimizer", "param")
                       if settings.get(f"offload_{part}", {}).get("device", "none") not in ("none", None)]
            zero = f" (ZeRO-{settings.get('stage', 0)}{', offload ' + '+'.join(offload) if offload else ''})"
        accelerator.print(
            f"task={self.task.name} train rows={len(self.task.train_rows())} steps={self.total_steps} "
            f"({self.steps_per_epoch}/epoch) global batch={self.global_batch} "
            f"(= {train.batch_size} per device x {train.grad_accum} accumulation x {accelerator.num_processes} "
            f"processes) lr={train.lr} precision={accelerator.mixed_precision} "
            f"grad checkpointing={'on' if self.config.model.grad_checkpointing else 'off'} "
            f"backend={accelerator.distributed_type.name.lower()}{zero}")

    # ----- the step -----
    def forward_backward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        with self.efficiency.counting(batch):  # the FLOPs of the first micro-batch only
            with self.accelerator.autocast():
                loss, logs = self.task.training_step(self.model, batch, self.generator)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite loss {loss.item()} at step {self.state.step} "
                    f"({ {k: float(v) for k, v in logs.items()} }); lower train.lr or check the data; the last "
                    "checkpoint is intact")
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
                if grad_norm is not None and not torch.isfinite(torch.as_tensor(grad_norm)):
                    raise FloatingPointError(
                        f"non-finite gradient norm at step {self.state.step + 1} (loss {loss.item():.4g}, "
                        f"{ {k: round(float(v), 4) for k, v in logs.items()} }); stopped before the optimizer step, "
                        "so the last checkpoint is intact; lower train.lr or check the data")
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
        with self.own_run_dir():
            self.start()
            for batch in self.batches():
                logs = self.train_step(batch)
                if logs is None:
                    continue
                self.state.step += 1
                self.log(logs)
                if self.config.train.eval_every and self.state.step % self.config.train.eval_every == 0:
                    self.evaluate_and_log("val")
                if self.config.train.visual_every and self.state.step % self.config.train.visual_every == 0:
                    self.visualise()
                if self.checkpointer.due(self.state.step):
                    self.save_checkpoint()
                if self.state.step >= self.total_steps:
                    break
            return self.finish()

    @contextlib.contextmanager
    def own_run_dir(self) -> Iterator[None]:
        """One training process group per run directory, and no run silently mixed into another's checkpoints."""
        if not self.accelerator.is_main_process:
            yield
            return
        with self.run.lock():
            if self.overwrite and not self.config.resume:
                removed = self.run.clear_training_state()
                if removed:
                    self.accelerator.print(f"--overwrite: removed {', '.join(removed)} from {self.run.path}")
            if not self.config.resume and self.run.has_training_state():
                raise RunDirError(
                    f"{self.run.path} already holds a training run (checkpoints/ or {RunDir.TRAIN_LOG}); pass "
                    "--resume to continue it, --overwrite to start over, or choose another --output-dir "
                    "(keep-last-k pruning and --resume would otherwise mix the two runs)")
            yield

    def start(self) -> None:
        """Record the config, resume if asked, open the trackers, measure the device's peak FLOP/s."""
        accelerator, config = self.accelerator, self.config
        if config.resume:  # before the config is written: a refused resume must leave the run as it was
            self.resume()
        self.run_id = ""
        if accelerator.is_main_process:
            self.run.save_config(config)
            # A resumed run keeps its id; a fresh one (or --overwrite) gets a new one.
            self.run_id = (self.run.metadata().get("run_id") if config.resume else None) or uuid.uuid4().hex[:12]
            self.run.save_metadata(run_metadata(config, accelerator, step=self.state.step, run_id=self.run_id))
        start_trackers(accelerator, flatten(config.to_dict()), self.run_id)
        if accelerator.is_main_process:  # only the main process logs
            self.efficiency.peak, source = peak_flops(accelerator.device, accelerator.mixed_precision)
            logger.info("MFU against %.3g TFLOP/s per device (%s)", self.efficiency.peak / 1e12, source)
        # disable=None: tqdm stays quiet when stderr is not a terminal (logs of batch jobs)
        self.progress = tqdm(total=self.total_steps, initial=self.state.step, desc=config.task, dynamic_ncols=True,
                             disable=None if accelerator.is_main_process and config.train.progress else True)
        self.new_window()

    def new_window(self) -> None:
        """Start counting throughput afresh (clips, tokens, data waits since now)."""
        self.window = {"start": time.perf_counter(), "data_wait": 0.0, "clips": 0, "tokens": 0}

    def resume(self) -> None:
        weight_decay = [group["weight_decay"] for group in self.optimizer.param_groups]
        found = self.checkpointer.resume(self.stage_checkpoint)
        if self.stage_checkpoint is not None:
            restore_group_settings(self.optimizer, weight_decay)
        if found is None:
            self.accelerator.print(f"--resume: no finished checkpoint in {self.run.checkpoints_dir}, starting at step 0")
            return
        processes = self.accelerator.num_processes
        refuse_changed_settings(RunDir(found), self.config, processes)
        resized = carry_over(self.state, self.scheduler, found, self.config, processes)
        self.train_log.rewind(self.state.step)
        self.accelerator.print(f"resumed from {found} at step {self.state.step}{resized}, epoch {self.state.epoch}, "
                               f"batch {self.state.batches_in_epoch}")

    def batches(self) -> Iterator[dict[str, Any]]:
        """Training batches across epochs from the current position, counting samples and timing data waits."""
        accelerator = self.accelerator
        while True:
            self.train_loader.set_epoch(self.state.epoch)
            self.train_dataset.set_epoch(self.state.epoch)
            loader = self.train_loader
            if self.state.batches_in_epoch and not self.streaming:  # streaming resumes itself, reading nothing
                loader = accelerator.skip_first_batches(self.train_loader, self.state.batches_in_epoch)
            fetch_start = time.perf_counter()
            for batch in loader:
                self.window["data_wait"] += time.perf_counter() - fetch_start
                self.state.batches_in_epoch += 1
                self.count_bad_samples(batch)
                if "frames" in batch:  # a batch whose every clip was unreadable is skipped
                    clips = batch["frames"].shape[0] * accelerator.num_processes
                    self.window["clips"] += clips
                    self.window["tokens"] += batch_tokens(batch, self.config.model) * accelerator.num_processes
                    self.state.samples_seen += clips
                    yield batch
                fetch_start = time.perf_counter()
            self.state.epoch += 1
            self.state.batches_in_epoch = 0

    def log(self, logs: dict[str, float]) -> None:
        step = self.state.step
        self.progress.update(1)
        self.progress.set_postfix(loss=f"{logs['train/loss']:.3f}")
        if step % self.config.train.log_every and step != self.total_steps:
            return
        elapsed = time.perf_counter() - self.window["start"]
        logs.update(throughput_logs(self.window["clips"], elapsed, self.window["data_wait"]))
        logs.update(self.efficiency.logs(self.window["clips"], float(self.window["tokens"]), elapsed))
        if logs["perf/data_wait_fraction"] > 0.5 and step > self.config.train.log_every:
            logger.warning("data loading takes %.0f%% of step time: raise data.num_workers",
                           100 * logs["perf/data_wait_fraction"])
        self.accelerator.log(logs, step=step)
        self.train_log.append(step, logs)
        self.new_window()

    def visualise(self) -> None:
        """The task's visuals of its fixed clips, once per step; their time is left out of the throughput."""
        if self.visualised_at == self.state.step or not self.config.train.visual_samples:
            return
        start = time.perf_counter()
        visuals = draw_visuals(self.task, self.model, self.accelerator)
        log_visuals(self.accelerator, visuals, self.state.step)
        seconds = time.perf_counter() - start  # drawing and writing both: what a user pays for the visuals
        self.window["start"] += seconds
        self.visualised_at = self.state.step
        self.accelerator.log({"perf/visuals_s": seconds}, step=self.state.step)

    def finish(self) -> dict[str, Any]:
        """Last checkpoint, evaluation choices, export (weights, config, tokenizer, task files), final val metrics."""
        self.progress.close()
        checkpoint = self.save_checkpoint()
        self.tune_evaluation()
        self.checkpointer.export(self.model, checkpoint)
        if self.accelerator.is_main_process:
            self.write_run_files(self.run.path)
        metrics = self.evaluate_and_log("val")
        self.visualise()
        finish_hparams(self.accelerator, flatten(self.config.to_dict()), metrics)
        if self.accelerator.is_main_process:
            metadata = run_metadata(self.config, self.accelerator, step=self.state.step, run_id=self.run_id,
                                    metrics=metrics, samples_seen=self.state.samples_seen)
            self.run.save_metadata(metadata)
            parameters = sum(getattr(p, "ds_numel", p.numel()) for p in self.model.parameters())
            write_text(self.run.model_card_path, model_card(self.config, metadata, parameters))
        self.accelerator.end_training()
        return metrics

    def save_checkpoint(self) -> Path:
        """Save only finite weights: a diverged model must never look like a good checkpoint to --resume."""
        bad = torch.tensor([sum(int(not torch.isfinite(p.detach()).all()) for p in self.model.parameters())],
                           device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            bad = self.accelerator.reduce(bad, reduction="sum")
        if int(bad):
            raise FloatingPointError(f"{int(bad)} parameter tensors became non-finite by step {self.state.step}; "
                                     "not saving them (the previous checkpoint is intact); lower train.lr")
        return self.checkpointer.save(self.state.step)

    def write_run_files(self, directory: Path) -> None:
        """Config, tokenizer and task files (e.g. the answer vocabulary): what makes a directory loadable."""
        target = RunDir(directory)
        target.save_config(self.config)
        self.task.tokenizer.save_pretrained(str(target.tokenizer_dir))
        self.task.save_artifacts(directory)

    def tune_evaluation(self) -> None:
        """Let the task choose its evaluation settings on held-out data; the choice lands in the saved config and
        in OUT/evaluation_choice.json, which evaluate.py reports."""
        self.model.eval()
        with self.accelerator.autocast():
            with progress_bars(self.config.train.progress):
                choice = self.task.tune_evaluation(self.model, self.accelerator)
        self.model.train()
        if choice is not None and self.accelerator.is_main_process:
            self.run.save_evaluation_choice(choice)
            self.accelerator.print(f"evaluation settings chosen on held-out data: {json.dumps(choice)}")

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
                "re-run `python -m prepare DATA` and check clip_store/failed.jsonl")

    def evaluate_and_log(self, split: str) -> dict[str, Any]:
        if not self.task.has_split(split):
            self.accelerator.print(f"no {split} split for {self.task.annotation_kind}: skipping evaluation in training")
            return {}
        started = time.perf_counter()
        self.model.eval()
        with self.accelerator.autocast():
            with progress_bars(self.config.train.progress):
                metrics = self.task.evaluate(self.model, self.accelerator, split)
        self.model.train()
        self.window["start"] += time.perf_counter() - started  # evaluation is not training throughput
        self.accelerator.log({f"{split}/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))},
                             step=self.state.step)
        if self.accelerator.is_main_process:
            self.run.metrics_path(split).write_text(json.dumps(metrics, indent=2))
            self.accelerator.print(f"{split}: " + ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                                                            for k, v in metrics.items()))
        return metrics
