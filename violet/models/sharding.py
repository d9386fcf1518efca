"""Models whose parameters DeepSpeed ZeRO-3 partitions while they are built (`deepspeed.zero.Init`).

A partitioned parameter keeps only this rank's slice: its `.data` is empty and its full shape is `ds_shape`, so
`state_dict()` shapes and `load_state_dict` do not work on it. `tensor_shapes` reads the real shapes, and
`load_into` loads weights one module at a time: the module's parameters are gathered, rank 0 copies the values
in, and DeepSpeed partitions them again on leaving (GatheredParameters with modifier_rank=0), so no more than one
module is ever whole in a rank's memory. On an ordinary model both fall back to the plain PyTorch calls.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


def is_partitioned(model: nn.Module) -> bool:
    return any(hasattr(parameter, "ds_id") for parameter in model.parameters())


def tensor_shapes(model: nn.Module) -> dict[str, torch.Size]:
    """Shape of every state_dict entry (tied parameters under each of their names), partitioned or not."""
    shapes = {name: getattr(parameter, "ds_shape", parameter.shape)
              for name, parameter in model.named_parameters(remove_duplicate=False)}
    shapes.update({name: buffer.shape for name, buffer in model.named_buffers(remove_duplicate=False)})
    return {name: torch.Size(shapes[name]) for name in model.state_dict() if name in shapes}


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Non-strict load; returns (missing, unexpected) state_dict names, like `load_state_dict(strict=False)`."""
    if not is_partitioned(model):
        result = model.load_state_dict(dict(state), strict=False)
        return list(result.missing_keys), list(result.unexpected_keys)
    import deepspeed
    import torch.distributed as dist

    writes = dist.get_rank() == 0
    names = set(tensor_shapes(model))
    for prefix, module in model.named_modules():
        own = {name: p for name, p in module._parameters.items() if p is not None and prefix_key(prefix, name) in state}
        if own:
            with deepspeed.zero.GatheredParameters(list(own.values()), modifier_rank=0):
                if writes:
                    with torch.no_grad():
                        for name, parameter in own.items():
                            parameter.copy_(state[prefix_key(prefix, name)].to(parameter.dtype))
        for name, buffer in module._buffers.items():  # buffers are not partitioned: every rank copies
            key = prefix_key(prefix, name)
            if buffer is not None and key in state:
                buffer.copy_(state[key].to(buffer.dtype))
    loaded = set(state)
    return sorted(names - loaded), sorted(loaded - names)


def prefix_key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
