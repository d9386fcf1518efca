"""Optimizer and learning-rate schedule of a run, from its config."""
from __future__ import annotations

import torch
from transformers import get_scheduler

from violet.config import RunConfig


def build_optimizer(model: torch.nn.Module, config: RunConfig) -> torch.optim.Optimizer:
    """AdamW with no weight decay on biases, norms, embeddings and the names the model lists."""
    skip = model.no_weight_decay()
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        # A parameter ZeRO-3 partitioned while building the model is a flat slice: its real shape is ds_shape.
        ndim = len(getattr(parameter, "ds_shape", parameter.shape))
        (no_decay if ndim < 2 or name in skip else decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": config.train.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.train.lr, betas=(0.9, 0.98), eps=1e-6)




def build_scheduler(optimizer: torch.optim.Optimizer, config: RunConfig, total_steps: int, processes: int) -> object:
    """The config's transformers schedule. Accelerate's prepared scheduler advances once per process at every
    optimizer step, so the schedule is laid out in process-steps to end exactly at `total_steps`."""
    train = config.train
    return get_scheduler(train.lr_schedule, optimizer,
                         num_warmup_steps=int(train.warmup_ratio * total_steps) * processes,
                         num_training_steps=total_steps * processes)
