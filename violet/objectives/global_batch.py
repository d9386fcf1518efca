"""The global batch across ranks: gathers that keep gradients and tolerate unequal per-rank sizes.

Objectives that compare samples with each other (VTC, VTM hard negatives) are defined over the global batch, so
2 ranks x B computes the same loss and gradients as 1 rank x 2B. Per-rank sizes may differ by a
few samples when the loader dropped unreadable clips, so every gather first exchanges sizes and pads.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_sizes(local_rows: int, device: torch.device) -> list[int]:
    """Rows held by every rank, in rank order (one tiny all_gather)."""
    if not _distributed():
        return [local_rows]
    mine = torch.tensor([local_rows], device=device)
    sizes = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, mine)
    return [int(size) for size in sizes]


def gather_with_grad(tensor: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
    """Concatenate `tensor` from every rank along dim 0; gradients flow back to each rank's own rows.

    `accelerator.gather` would cut the graph; the autograd all-gather sends each slice's gradient back to the
    rank that owns it (a reduce-scatter), which is what makes multi-rank gradients equal single-rank ones.
    """
    if not _distributed():
        return tensor
    from torch.distributed._functional_collectives import all_gather_single_autograd

    sizes = sizes or rank_sizes(tensor.shape[0], tensor.device)
    longest = max(sizes)
    if tensor.shape[0] < longest:
        pad = tensor.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))
        tensor = torch.cat([tensor, pad])
    gathered = all_gather_single_autograd(tensor.contiguous(), 0, dist.group.WORLD)
    pieces = gathered.split(longest)
    return torch.cat([piece[:size] for piece, size in zip(pieces, sizes)])


def local_offset(sizes: list[int]) -> int:
    """Index of this rank's first row in the global batch."""
    rank = dist.get_rank() if _distributed() else 0
    return sum(sizes[:rank])
