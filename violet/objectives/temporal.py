"""Temporal contrast: the same clip altered in time as a negative for its own caption.

A mean over a clip's tokens, and over a caption's, is blind to the order of events unless each token's features
interact with its time position; in-batch negatives rarely differ from a positive only in order or direction, so
nothing in plain VTC asks for either. Three alterations (docs/benchmarks.md has what each did):

- "swap": the two halves swapped. The same things and motions in the other order (plus a jump at the seam); with
  temporal tubelets the tokens themselves are unchanged, only their time slots move.
- "reverse": the clip played backwards. Every motion runs the other way and events come in the other order; each
  tubelet's frames are reversed too, so the tokens differ from the first step and the term has a gradient at once.
  It assumes the text says which way things go: a caption true of the clip played backwards ("a man stands in a
  kitchen") is pushed away from a clip it also describes, which is why the term is off by default.
- "segments": with model.video_pool_segments >= 2, the clip's embedding made from its segment means in the other
  order (the model returns it beside the embedding). No second video pass, but a shortcut: each segment mean
  carries its own time-position embedding, so the two orders can be told apart without reading the motion.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from violet.config import ConfigError


def swap_halves(frames: torch.Tensor) -> torch.Tensor:
    """(B, T, C, H, W) -> the same clips with the second half of the frames first (T even or odd: a roll by T//2)."""
    return torch.roll(frames, shifts=frames.shape[1] // 2, dims=1)


def reverse_time(frames: torch.Tensor) -> torch.Tensor:
    """(B, T, C, H, W) -> the same clips played backwards."""
    return torch.flip(frames, dims=(1,))


ALTERATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"swap": swap_halves, "reverse": reverse_time}


def temporal_order_loss(text_embed: torch.Tensor, video_embed: torch.Tensor, swapped_embed: torch.Tensor,
                        logit_scale: torch.Tensor, weight: float) -> dict[str, torch.Tensor]:
    """Two-way InfoNCE per caption: its own clip against the same clip altered in time (all embeddings
    L2-normalised (B, D), this rank's rows). `temporal_acc`: how often the real clip already scores higher."""
    scale = logit_scale.float().squeeze()
    real = (text_embed.float() * video_embed.float()).sum(-1)
    swapped = (text_embed.float() * swapped_embed.float()).sum(-1)
    logits = scale * torch.stack([real, swapped], dim=1)  # (B, 2): column 0 is the positive
    targets = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return {"temporal": weight * F.cross_entropy(logits, targets),
            "temporal_acc": (real > swapped).float().mean().detach()}


def temporal_order_terms(model: Callable[..., dict], frames: torch.Tensor, text_embed: torch.Tensor,
                         video: dict[str, Any], weight: float, alteration: str = "swap",
                         rows: int = 0) -> dict[str, torch.Tensor]:
    """The altered clips' embeddings (`alteration`: a key of ALTERATIONS, a second video pass; or "segments", from
    the real pass) and the loss against them; `video` is the real clips' pass (its embed and logit_scale),
    `text_embed` the embedding of each clip's own caption. `rows` > 0: only the first `rows` clips take part, so the
    second pass costs rows / B of the first."""
    used = slice(None) if rows <= 0 else slice(0, rows)
    if alteration == "segments":
        altered = video["order_swapped_embed"][used]
    else:
        altered = model("video", frames=ALTERATIONS[alteration](frames[used]))["embed"]
    return temporal_order_loss(text_embed[used], video["embed"][used], altered, video["logit_scale"], weight)


def check_temporal_negative(objective: Any, model: Any) -> None:
    """Fail when the run is set up, not at the first step: the "segments" negative needs segment pooling."""
    if objective.temporal_weight > 0 and objective.temporal_negative == "segments" and model.video_pool_segments < 2:
        raise ConfigError("objective.temporal_negative=segments swaps the clip's segment means: it needs "
                          f"model.video_pool_segments >= 2, got {model.video_pool_segments}")
