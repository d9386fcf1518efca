"""Masked language modelling loss over the selected positions only."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def mlm_loss(logits: torch.Tensor, original_ids: torch.Tensor, positions: torch.Tensor, weight: float) -> dict:
    """logits: (num_masked, vocab) predicted at `positions` (bool, same shape as original_ids)."""
    targets = original_ids[positions]
    loss = F.cross_entropy(logits.float(), targets)
    accuracy = (logits.argmax(dim=-1) == targets).float().mean()
    return {"mlm": weight * loss, "mlm_acc": accuracy.detach()}
