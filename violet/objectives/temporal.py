"""Temporal-order contrast: a clip with its two halves swapped in time as a negative for its own caption.

A mean over a clip's tokens, and over a caption's, is blind to the order of events unless each token's features
interact with its time position; in-batch negatives rarely differ from a positive only in order, so nothing in
plain VTC asks for it. The swapped clip shows the same things and the same motions in the other order (plus a
jump at the seam), so the only way to score the caption higher on the real clip is to read the order.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F


def swap_halves(frames: torch.Tensor) -> torch.Tensor:
    """(B, T, C, H, W) -> the same clips with the second half of the frames first (T even or odd: a roll by T//2)."""
    return torch.roll(frames, shifts=frames.shape[1] // 2, dims=1)


def temporal_order_loss(text_embed: torch.Tensor, video_embed: torch.Tensor, swapped_embed: torch.Tensor,
                        logit_scale: torch.Tensor, weight: float) -> dict[str, torch.Tensor]:
    """Two-way InfoNCE per caption: its own clip against the same clip with its halves swapped (all embeddings
    L2-normalised (B, D), this rank's rows). `temporal_acc`: how often the real order already scores higher."""
    scale = logit_scale.float().squeeze()
    real = (text_embed.float() * video_embed.float()).sum(-1)
    swapped = (text_embed.float() * swapped_embed.float()).sum(-1)
    logits = scale * torch.stack([real, swapped], dim=1)  # (B, 2): column 0 is the positive
    targets = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return {"temporal": weight * F.cross_entropy(logits, targets),
            "temporal_acc": (real > swapped).float().mean().detach()}


def temporal_order_terms(model: Callable[..., dict], frames: torch.Tensor, text_embed: torch.Tensor,
                         video: dict[str, Any], weight: float) -> dict[str, torch.Tensor]:
    """The swapped clips' video pass and the loss against it; `video` is the real clips' pass (its embed and
    logit_scale), `text_embed` the embedding of each clip's own caption."""
    swapped = model("video", frames=swap_halves(frames))
    return temporal_order_loss(text_embed, video["embed"], swapped["embed"], video["logit_scale"], weight)
