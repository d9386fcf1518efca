"""Building the model: whole, or partitioned across ranks as it is built (ZeRO-3).

Under ZeRO-3 the engine partitions parameters when `accelerator.prepare` runs, so by default every rank first builds
the whole model and the largest model a node can train is bounded by one rank's memory at construction. With
`zero3_init_flag: true` in the Accelerate config (ours set it for every ZeRO-3 launch), the model is built inside
`deepspeed.zero.Init` instead: each module's parameters are partitioned as soon as that module is built, so a
rank never holds more than its share plus the module being built. Initialisation done through `Module.apply` is
gathered by DeepSpeed; weights loaded afterwards go through violet.models.sharding.load_into.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any

from violet.config import RunConfig


def sharded_construction(accelerator: Any, config: RunConfig) -> contextlib.AbstractContextManager:
    """The context to build the model in: `deepspeed.zero.Init` for ZeRO-3 with zero3_init_flag, else a no-op."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None or plugin.zero_stage != 3 or not plugin.zero3_init_flag:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.Init(config_dict_or_path=init_config(plugin.deepspeed_config, config, accelerator))


def init_config(deepspeed_config: dict, config: RunConfig, accelerator: Any) -> dict:
    """The DeepSpeed config with the "auto" fields filled as Accelerate fills them at `prepare` (batch arithmetic
    from train.*, precision from the Accelerator, sizes from the model width), so the partitioning decided here
    (parameter dtype, which small parameters stay whole) is the one the engine then works with."""
    filled = copy.deepcopy(deepspeed_config)
    train, width = config.train, config.model.width
    filled.update(train_micro_batch_size_per_gpu=train.batch_size, gradient_accumulation_steps=train.grad_accum,
                  train_batch_size=train.batch_size * train.grad_accum * accelerator.num_processes)
    filled.pop("gradient_clipping", None)
    filled["bf16"] = {"enabled": accelerator.mixed_precision == "bf16"}
    filled["fp16"] = {"enabled": accelerator.mixed_precision == "fp16"}
    zero = filled.setdefault("zero_optimization", {})
    for key, value in (("reduce_bucket_size", width * width), ("stage3_prefetch_bucket_size", int(0.9 * width * width)),
                       ("stage3_param_persistence_threshold", 10 * width)):
        if zero.get(key) == "auto":
            zero[key] = value
    return filled
