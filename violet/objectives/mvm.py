"""Masked visual modelling with per-patch-normalised pixel targets (MAE's norm_pix_loss)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange


def pixel_targets(frames: torch.Tensor, patch: int, tubelet: int) -> torch.Tensor:
    """uint8 (B, T, 3, H, W) -> (B, T/tubelet * (H/patch) * (W/patch), 3 * tubelet * patch^2), each patch normalised.

    Token order matches the video encoder: time-major, then rows, then columns.
    """
    pixels = rearrange(
        frames.float() / 255.0, "b (t pt) c (h ph) (w pw) -> b (t h w) (pt ph pw c)", pt=tubelet, ph=patch, pw=patch
    )
    mean = pixels.mean(dim=-1, keepdim=True)
    var = pixels.var(dim=-1, keepdim=True)
    return (pixels - mean) / (var + 1e-6).sqrt()


def mvm_loss(prediction: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor, weight: float) -> dict:
    """prediction: (num_masked, patch_dim) at `positions` (bool (B, N)); targets: (B, N, patch_dim)."""
    loss = F.mse_loss(prediction.float(), targets[positions])
    return {"mvm": weight * loss}
