"""What train.py and evaluate.py share: building the typed config, the Accelerator and logging."""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration, InitProcessGroupKwargs
from accelerate.utils import set_seed

from violet.config import ModelConfig, RunConfig, apply_overrides, load_yaml, parse_dotted
from violet.models import preset, preset_overrides


def build_config(
    task_cls: type, model: str, config_file: str | None, flags: dict[str, Any], dotted: list[str],
    init_model: ModelConfig | None = None,
) -> RunConfig:
    """defaults < task defaults < preset < YAML < CLI flags < dotted overrides (see violet/config.py).

    `init_model` (fine-tuning with --init) takes the place of the preset: the architecture comes from the
    checkpoint, and the user's model.* settings (e.g. grad_checkpointing, dropout) still apply on top of it.
    """
    config = RunConfig()
    apply_overrides(config, task_cls.defaults)
    config.model = dataclasses.replace(init_model) if init_model is not None else preset(model)
    name = config.model.preset
    apply_overrides(config, preset_overrides(name, task_cls.name))  # e.g. SimVTP's masking ratios, VIOLET's frames
    if config_file:
        apply_overrides(config, load_yaml(config_file))
    apply_overrides(config, drop_unset(flags))
    apply_overrides(config, parse_dotted(dotted))
    return config


def drop_unset(flags: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Keep only the CLI flags the user gave (argparse leaves the others as None)."""
    return {section: {k: v for k, v in values.items() if v is not None} for section, values in flags.items()}


def mixed_precision(setting: str) -> str:
    """"auto": bf16 on GPUs that have it; fp32 on CPU, where bf16 autocast is slower for small models."""
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def build_accelerator(config: RunConfig, project_dir: str | None, log_with: str | None = "tensorboard") -> Accelerator:
    # Without CUDA the default NCCL backend makes each rank believe it is alone: choose gloo.
    # (A single plain process must not get a backend handler: Accelerate would then expect a process group.)
    launched_distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    handlers = [InitProcessGroupKwargs(backend=backend)] if launched_distributed else []
    accelerator = Accelerator(
        gradient_accumulation_steps=config.train.grad_accum,
        mixed_precision=mixed_precision(config.train.mixed_precision),
        log_with=log_with if project_dir else None,
        project_dir=project_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        kwargs_handlers=handlers,
    )
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
    if not (path / "hf").exists() or not (path / "clip_store").exists():
        raise SystemExit(f"{path} is not prepared (no hf/ or clip_store/): run `python -m prepare {path}` first")
    return path
