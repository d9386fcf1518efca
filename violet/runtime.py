"""What train.py and evaluate.py share: building the typed config, the Accelerator and logging."""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs, InitProcessGroupKwargs
from accelerate.utils import set_seed

from violet.config import ConfigError, RunConfig, apply_overrides, load_yaml, parse_dotted
from violet.data.layout import HF_DIRNAME, STORE_DIRNAME, is_prepared
from violet.engine.rundir import RunDir
from violet.engine.tracking import build_trackers
from violet.models import preset, preset_overrides


def build_config(
    task_cls: type, *, model: str | None = None, config_file: str | None = None,
    flags: dict[str, dict[str, Any]] | None = None, dotted: Sequence[str] = (), init: str = "", data_dir: str = "",
    output_dir: str = "", resume: bool = False,
) -> RunConfig:
    """The only place a run's config is made: defaults < task defaults < preset < task init
    defaults (with `init`) < YAML < CLI flags < dotted.

    With `init` (fine-tuning) the checkpoint's architecture takes the place of the preset, and the user's model.*
    settings (e.g. grad_checkpointing, dropout) still apply on top of it; a different `model` preset is refused.
    Errors name the key and the allowed values (ConfigError).
    """
    config = RunConfig(task=task_cls.name, output_dir=output_dir, init=init, resume=resume)
    config.data.data_dir = data_dir
    apply_overrides(config, task_cls.defaults)
    if init:
        config.model = RunDir(init).load_config().model
        if model and model != config.model.preset:
            raise ConfigError(f"--model {model} conflicts with --init {init}, a {config.model.preset!r} model: the "
                              "architecture comes from the checkpoint; drop --model, or train without --init")
    else:
        config.model = preset(model or "tiny")
    # e.g. SimVTP's masking ratios; per-task model settings only when the architecture comes from the preset
    apply_overrides(config, preset_overrides(config.model.preset, task_cls.name, architecture=not init))
    if init:  # a fine-tune's recipe (e.g. a gentler lr) wins over the preset's from-scratch recipe
        apply_overrides(config, task_cls.init_defaults)
    if config_file:
        apply_overrides(config, load_yaml(config_file))
    apply_overrides(config, drop_unset(flags or {}))
    apply_overrides(config, parse_dotted(list(dotted)))
    return config


def drop_unset(flags: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Keep only the CLI flags the user gave (argparse leaves the others as None)."""
    return {section: {k: v for k, v in values.items() if v is not None} for section, values in flags.items()}


def mixed_precision(setting: str) -> str:
    """"auto": bf16 on GPUs that have it; fp32 on CPU, where bf16 autocast is slower for small models."""
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def build_accelerator(config: RunConfig, project_dir: str | None, log_with: str | None = None) -> Accelerator:
    """`log_with` (default: train.log_with) chooses Accelerate's trackers; none without a project_dir."""
    # Without CUDA the default NCCL backend makes each rank believe it is alone: choose gloo.
    # (A single plain process must not get a backend handler: Accelerate would then expect a process group.)
    launched_distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    handlers: list[Any] = []
    if launched_distributed:
        # find_unused_parameters: a task may leave parts of the one model idle (retrieval without its VTM term
        # builds the fusion stack that --init for QA later needs); DDP would otherwise fail at the second step.
        handlers = [InitProcessGroupKwargs(backend=backend), DistributedDataParallelKwargs(static_graph=True)]
    # Ranks started by torchrun (or `accelerate launch --multi_gpu`) on a machine without CUDA are only treated as
    # one distributed job when Accelerate is told it runs on CPU; otherwise each rank trains alone, unsynchronised.
    # DeepSpeed launches keep their own distributed type.
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    cpu_job = launched_distributed and not torch.cuda.is_available() and not deepspeed
    trackers = []
    if project_dir:
        try:
            trackers = build_trackers(log_with or config.train.log_with, project_dir, RunDir.TENSORBOARD)
        except ValueError as error:  # e.g. wandb asked for but not installed
            raise SystemExit(f"config error: {error}") from None
    accelerator = Accelerator(
        cpu=cpu_job,
        gradient_accumulation_steps=config.train.grad_accum,
        mixed_precision=mixed_precision(config.train.mixed_precision),
        log_with=trackers or None,
        project_dir=project_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        kwargs_handlers=handlers,
        # train.compile: Accelerate wraps the model in torch.compile (inductor) when it prepares it, and unwraps it
        # again for saving, so checkpoints keep the plain parameter names.
        dynamo_backend="inductor" if config.train.compile else "no",
    )
    if launched_distributed and accelerator.distributed_type.name == "NO":
        raise SystemExit(f"launched as {os.environ['WORLD_SIZE']} processes, but Accelerate set up no distributed "
                         "job: each process would train alone; launch with `accelerate launch` and a config for "
                         "this machine (accelerate_configs/)")
    set_seed(config.train.seed, device_specific=False)
    return accelerator


def setup_logging(accelerator: Accelerator | None = None) -> None:
    level = logging.INFO if accelerator is None or accelerator.is_main_process else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("datasets", "filelock", "urllib3", "torch.distributed", "DeepSpeed", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def require_prepared(data_dir: str) -> Path:
    path = Path(data_dir)
    if not is_prepared(path):
        raise SystemExit(f"{path} is not prepared (no {HF_DIRNAME}/ or {STORE_DIRNAME}/): run "
                         f"`python -m prepare {path}` first")
    return path
