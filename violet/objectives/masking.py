"""Random masks for MLM (BERT's 80/10/10 rule) and MVM (a fixed number of patches per clip)."""
from __future__ import annotations

import torch


def mask_text_tokens(
    ids: torch.Tensor,
    attention_mask: torch.Tensor,
    special_ids: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    prob: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (masked ids, bool positions to predict). Padding and special tokens are never chosen.

    Each row gets at least one masked token when it has any maskable token, so short captions still teach MLM.
    """
    maskable = attention_mask.bool() & ~torch.isin(ids, special_ids)
    draw = torch.rand(ids.shape, generator=generator, device=ids.device)
    positions = (draw < prob) & maskable
    # Force one position in rows that drew none: the maskable token with the smallest draw.
    empty = ~positions.any(dim=1) & maskable.any(dim=1)
    if empty.any():
        forced = torch.where(maskable, draw, torch.full_like(draw, 2.0)).argmin(dim=1)
        positions[empty, forced[empty]] = True
    action = torch.rand(ids.shape, generator=generator, device=ids.device)
    masked = ids.clone()
    masked[positions & (action < 0.8)] = mask_id
    random_slots = positions & (action >= 0.8) & (action < 0.9)
    random_ids = torch.randint(vocab_size, ids.shape, generator=generator, device=ids.device)
    masked[random_slots] = random_ids[random_slots]
    return masked, positions


def random_patch_mask(
    batch: int, num_patches: int, ratio: float, device: torch.device, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Bool (batch, num_patches) with exactly round(ratio * num_patches) True per row (at least one)."""
    count = max(1, round(ratio * num_patches))
    scores = torch.rand(batch, num_patches, generator=generator, device=device)
    chosen = scores.argsort(dim=1)[:, :count]
    mask = torch.zeros(batch, num_patches, dtype=torch.bool, device=device)
    mask.scatter_(1, chosen, True)
    return mask


def tube_mask(
    batch: int, steps: int, patches: int, ratio: float, device: torch.device,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """VideoMAE/SimVTP tube masking: bool (batch, steps * patches), True = hidden from the encoder.

    The same round(ratio * patches) spatial positions are hidden at every time step (a tube through time), so
    a hidden patch cannot be copied from the next frame. At least one patch per step stays visible and one hidden.
    """
    hidden = min(patches - 1, max(1, round(ratio * patches)))
    spatial = random_patch_mask(batch, patches, hidden / patches, device, generator)
    return spatial[:, None, :].expand(batch, steps, patches).reshape(batch, steps * patches)
