"""Resuming: what a resumed run may not change, and resuming on another number of processes than the checkpoint
was saved by (clusters change size between jobs).

Each piece of resumable state is carried over as follows:
- global batch: kept. train.py re-chooses the per-device batch before the Accelerator exists
  (`adapt_batch_to_processes`), keeping the saved accumulation so the objective is unchanged, and prints it;
  the user may instead pass another per-device batch and accumulation with the same global batch.
- data position: by samples seen in the epoch. Accelerate's seedable sampler draws the same permutation for any
  process count, and every optimizer step takes the next `global batch` samples of it, so the resumed run goes on
  with exactly the samples the saved run would have used next (`batches_to_skip`).
- learning-rate schedule: laid out in process-steps (optim.build_scheduler), so its counter is rescaled
  (`rescale_schedule`).
- optimizer state: without DeepSpeed every rank holds the full state and Accelerate saves one copy, which loads on
  any count. DeepSpeed ZeRO saves one partition per rank; such a checkpoint is converted (once per resume, into
  a staging directory beside it) with DeepSpeed's universal-checkpoint converter, whose per-parameter files load
  on any count, and DeepSpeed is told to read that format (`checkpoint.load_universal`).
- per-rank random generators: reseeded from (seed, step, rank) (state.GeneratorState).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from violet.config import RunConfig
from violet.engine.rundir import RunDir, RunDirError
from violet.engine.state import STATE_JSON
from violet.engine.weights import ZERO_TAG

logger = logging.getLogger(__name__)
STAGING = ".resize"  # under checkpoints/: never a step_* name, so never taken for a checkpoint


class ResizeError(RunDirError):
    """The checkpoint cannot continue on this number of processes; the message says why and what to do."""


def launched_processes() -> int:
    """The process count of this launch, known before the Accelerator exists (accelerate launch / torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def saved_processes(checkpoint: Path) -> int:
    """How many processes saved `checkpoint`: recorded in its trainer state, or (older checkpoints) counted from
    the random-state file Accelerate writes per process."""
    state_file = checkpoint / STATE_JSON
    if state_file.exists():
        recorded = json.loads(state_file.read_text()).get("trainer", {}).get("num_processes", 0)
        if recorded:
            return int(recorded)
    return max(1, len(list(checkpoint.glob("random_states_*.pkl"))))


def newest_checkpoint(output_dir: str) -> Path | None:
    from violet.engine.checkpointer import finished_checkpoints

    found = finished_checkpoints(RunDir(output_dir).checkpoints_dir)
    return found[-1] if found else None


def keep_global_batch(global_batch: int, saved_accum: int, processes: int) -> tuple[int, int]:
    """(per-device batch, accumulation) that give `global_batch` on `processes`. The accumulation stays the saved
    one when it can, so every micro-batch step sees the same samples together as before: the contrastive and
    matching objectives draw their negatives from the (all-gathered) micro-batch, so splitting it into more
    accumulation steps would change the loss itself, not only the memory per device."""
    if global_batch % processes:
        raise ResizeError(f"the global batch of {global_batch} cannot be split evenly over {processes} processes; "
                          f"resume on a process count that divides {global_batch}")
    if global_batch % (processes * saved_accum) == 0:
        return global_batch // (processes * saved_accum), saved_accum
    return global_batch // processes, 1


def adapt_batch_to_processes(config: RunConfig, processes: int) -> str | None:
    """For `--resume` on another process count: set train.batch_size / grad_accum so the global batch stays the
    saved one. Returns what changed, for the log, or None when nothing had to."""
    checkpoint = newest_checkpoint(config.output_dir)
    if checkpoint is None or not (checkpoint / RunDir.CONFIG).exists():
        return None
    saved_count = saved_processes(checkpoint)
    if saved_count == processes:
        return None
    if config.data.streaming:
        raise ResizeError(f"{checkpoint} was saved by {saved_count} processes and this launch has {processes}: a "
                          "streaming data set (data.streaming) keeps one read position per process and cannot be "
                          f"re-split; resume with {saved_count} processes")
    saved = RunDir(checkpoint).load_config().train
    train = config.train
    if (train.batch_size, train.grad_accum) != (saved.batch_size, saved.grad_accum):
        return None  # the user asked for other values: the resume check refuses them with its own message
    global_batch = saved.batch_size * saved.grad_accum * saved_count
    train.batch_size, train.grad_accum = keep_global_batch(global_batch, saved.grad_accum, processes)
    return (f"global batch {global_batch} kept on {processes} processes: {train.batch_size} per device x "
            f"{train.grad_accum} accumulation (saved by {saved_count} processes: {saved.batch_size} x "
            f"{saved.grad_accum}); a larger per-device batch needs more memory per device: to trade it for "
            "accumulation, pass train.batch_size and train.grad_accum with the same product")


def batches_to_skip(batches_in_epoch: int, saved_batch: int, saved_count: int, batch: int, processes: int) -> int:
    """Micro-batches per process to skip now, for the samples of the epoch the saved run had consumed."""
    samples = batches_in_epoch * saved_batch * saved_count
    if samples % (batch * processes):
        raise ResizeError(f"{samples} samples of the epoch were consumed, not a whole number of batches of "
                          f"{batch} x {processes} processes")
    return samples // (batch * processes)


def rescale_schedule(scheduler: Any, step: int, processes: int) -> None:
    """Put the schedule where `step` optimizer steps on `processes` processes leave it (it counts process-steps,
    so the restored counter belongs to the old count), and set the optimizer's learning rates to match."""
    inner = getattr(scheduler, "scheduler", scheduler)  # Accelerate's wrapper steps it once per process
    inner.last_epoch = step * processes - 1
    inner.step()  # recomputes every group's lr at last_epoch = step * processes


def is_deepspeed_checkpoint(checkpoint: Path) -> bool:
    return (checkpoint / ZERO_TAG).is_dir()


def stage_universal(checkpoint: Path) -> Path:
    """A directory Accelerate can load like `checkpoint`, whose DeepSpeed engine state is in the universal format
    (per parameter, any process count). Everything else links to the checkpoint's own files. Main process only."""
    from deepspeed.checkpoint.ds_to_universal import main as to_universal

    staging = checkpoint.parent / STAGING / checkpoint.name
    shutil.rmtree(staging, ignore_errors=True)  # left by a resume that was killed
    staging.mkdir(parents=True)
    for entry in checkpoint.iterdir():
        if entry.name != ZERO_TAG:
            (staging / entry.name).symlink_to(entry.resolve())
    logger.info("converting %s to DeepSpeed's universal checkpoint format in %s", checkpoint / ZERO_TAG, staging)
    to_universal(argparse.Namespace(
        input_folder=str(checkpoint / ZERO_TAG), output_folder=str(staging / ZERO_TAG),
        num_extract_workers=1, num_merge_workers=1, keep_temp_folder=False, strict=True, inject_missing_state=True))
    return staging


def universal_loading(accelerator: Any, config: RunConfig) -> Any:
    """Before `accelerator.prepare`: when `--resume` will load a DeepSpeed checkpoint saved by another process
    count, tell DeepSpeed to read the universal format and return the staging function for Checkpointer.resume;
    otherwise None. A checkpoint and a launch that disagree on DeepSpeed are refused here, before any work."""
    checkpoint = newest_checkpoint(config.output_dir) if config.resume else None
    if checkpoint is None:
        return None
    plugin = accelerator.state.deepspeed_plugin
    if is_deepspeed_checkpoint(checkpoint) != (plugin is not None):
        saved_with = "with DeepSpeed" if plugin is None else "without DeepSpeed"
        raise ResizeError(f"{checkpoint} was saved {saved_with} and this launch is "
                          f"{'not ' if plugin is None else ''}using it; resume with the accelerate config the run was "
                          "trained with (the number of processes may differ)")
    if plugin is None or saved_processes(checkpoint) == accelerator.num_processes:
        return None
    plugin.deepspeed_config.setdefault("checkpoint", {})["load_universal"] = True
    return stage_universal


def carry_over(state: Any, scheduler: Any, checkpoint: Path, config: RunConfig, processes: int) -> str:
    """After loading `checkpoint`: move the data position and the schedule to this process count. Returns the
    note for the resume line ("saved by 2 processes, now 1"), empty when the count did not change."""
    saved_count = saved_processes(checkpoint)
    state.num_processes = processes
    if saved_count == processes:
        return ""
    saved_batch = RunDir(checkpoint).load_config().train.batch_size
    state.batches_in_epoch = batches_to_skip(state.batches_in_epoch, saved_batch, saved_count,
                                             config.train.batch_size, processes)
    rescale_schedule(scheduler, state.step, processes)
    return f" (saved by {saved_count} process{'es' if saved_count > 1 else ''}, now {processes})"


def global_batch_of(checkpoint: Path, config: RunConfig, processes: int) -> tuple[int, int]:
    """(saved, current) global batch."""
    saved = RunDir(checkpoint).load_config().train
    train = config.train
    return (saved.batch_size * saved.grad_accum * saved_processes(checkpoint),
            train.batch_size * train.grad_accum * processes)


def restore_group_settings(optimizer: Any, weight_decay: list[float]) -> None:
    """Undo two things DeepSpeed's universal loader does to a torch optimizer with several parameter groups:
    - it copies the first group's hyperparameters onto every group, which would put weight decay on the biases,
      norms and embeddings that build_optimizer exempts: each group's own value is put back;
    - it gives every group's state one shared `step` tensor, which AdamW increments in place once per group, so
      the bias correction ran ahead (resumed losses drifted from the uninterrupted run's from the second step
      on): each state gets its own copy."""
    for group, decay in zip(optimizer.param_groups, weight_decay, strict=True):
        group["weight_decay"] = decay
    inner = optimizer
    while hasattr(inner, "optimizer"):  # Accelerate's wrapper -> DeepSpeed's ZeRO optimizer -> torch's AdamW
        inner = inner.optimizer
    for state in inner.state.values():
        if isinstance(state.get("step"), torch.Tensor):
            state["step"] = state["step"].clone()


# Settings a resumed run cannot change: the restored optimizer, schedule, data order and model would silently keep
# the old values while the run's config recorded the new ones.
FIXED_ON_RESUME = ("model", "objective", "train.lr", "train.weight_decay", "train.warmup_ratio", "train.lr_schedule",
                   "train.batch_size", "train.grad_accum", "train.seed", "data.num_frames", "data.train_augment",
                   "data.crop_scale_min", "data.horizontal_flip", "data.streaming", "data.corpora")

FREE_ON_RESUME = ("model.grad_checkpointing", "model.video_init", "model.text_init")  # no effect on what is restored


def refuse_changed_settings(checkpoint: RunDir, config: RunConfig, processes: int) -> None:
    if not checkpoint.config_path.exists():
        return  # a checkpoint written before steps carried their config: nothing to compare against
    free = FREE_ON_RESUME
    if saved_processes(checkpoint.path) != processes:  # train.py re-split the global batch for this count
        saved_global, wanted_global = global_batch_of(checkpoint.path, config, processes)
        if saved_global != wanted_global:
            raise RunDirError(f"--resume keeps the global batch of {checkpoint.path} ({saved_global}); "
                              f"{processes} processes x train.batch_size x train.grad_accum give {wanted_global}")
        free = (*free, "train.batch_size", "train.grad_accum")
    saved, wanted = flatten(checkpoint.load_config().to_dict()), flatten(config.to_dict())
    changed = [f"{key}: {saved.get(key)!r} -> {wanted[key]!r}" for key in wanted
               if key.startswith(FIXED_ON_RESUME) and key not in free and saved.get(key) != wanted[key]]
    if changed:
        raise RunDirError(f"--resume cannot change {'; '.join(changed)} (the checkpoint {checkpoint.path} restores "
                          "the old optimizer, schedule, data order and model); resume without these overrides, or "
                          "start a new run from it with --init RUN")


def flatten(nested: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
