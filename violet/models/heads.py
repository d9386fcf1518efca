"""Task heads: MLM (tied to the word embeddings), VTC projections + temperature, classifiers, MVM."""
from __future__ import annotations

import math

import torch
from torch import nn


class MLMHead(nn.Module):
    """BERT's prediction head; the decoder weight is tied to the word embeddings."""

    def __init__(self, width: int, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width))
        self.decoder = nn.Linear(width, word_embeddings.num_embeddings)
        self.decoder.weight = word_embeddings.weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden))


class VTCHead(nn.Module):
    """Projections to the shared embedding space and the learned temperature."""

    def __init__(self, width: int, embed_dim: int) -> None:
        super().__init__()
        self.text_proj = nn.Linear(width, embed_dim)
        self.video_proj = nn.Linear(width, embed_dim)
        # Shape [1], not a scalar: DeepSpeed cannot partition 0-dim parameters across ranks.
        self.logit_scale = nn.Parameter(torch.full((1,), math.log(1 / 0.07)))

    def scale(self) -> torch.Tensor:
        # Clamped here (inside forward) because an in-place clamp outside the engine is lost under ZeRO.
        return self.logit_scale.clamp(max=math.log(100.0)).exp()


def classifier(width: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, width * 2), nn.GELU(), nn.LayerNorm(width * 2), nn.Linear(width * 2, outputs))
