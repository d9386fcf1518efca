"""Transformer blocks on `scaled_dot_product_attention`, shared by the video, text, fusion and decoder stacks.

Blocks are pre-norm (ViT, VideoMAE, SimVTP) or post-norm (`norm_first=False`: BERT's layout, so a fusion stack
initialised from BERT layers computes what BERT computed).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

BERT_LAYER_NORM_EPS = 1e-12


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)
        attn_mask = None
        if key_padding_mask is not None:
            # True = attend; broadcast over heads and query positions.
            attn_mask = key_padding_mask[:, None, None, :].to(torch.bool)
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(out.transpose(1, 2).reshape(batch, length, width))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float, norm_first: bool = True) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        eps = 1e-5 if norm_first else BERT_LAYER_NORM_EPS
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.attn = Attention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.norm_first:
            x = x + self.attn(self.norm1(x), key_padding_mask)
            return x + self.mlp(self.norm2(x))
        x = self.norm1(x + self.attn(x, key_padding_mask))
        return self.norm2(x + self.mlp(x))


class TransformerStack(nn.Module):
    """`depth` blocks and, for pre-norm stacks, a final LayerNorm; optional per-block activation checkpointing."""

    def __init__(
        self, depth: int, width: int, heads: int, mlp_ratio: float, dropout: float, norm_first: bool = True
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, dropout, norm_first) for _ in range(depth))
        # A post-norm stack already ends in a LayerNorm (BERT has no extra final norm).
        self.norm = nn.LayerNorm(width) if norm_first else nn.Identity()
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            if self.grad_checkpointing and self.training:
                x = checkpoint(block, x, key_padding_mask, use_reentrant=False)
            else:
                x = block(x, key_padding_mask)
        return self.norm(x)


def sincos_table(positions: int, dim: int) -> torch.Tensor:
    """VideoMAE's fixed joint position table (1, positions, dim): interleaved sin/cos, as its checkpoints expect."""
    position = torch.arange(positions, dtype=torch.float64)[:, None]
    exponent = 2 * (torch.arange(dim) // 2).to(torch.float64) / dim
    angles = position / torch.pow(10000.0, exponent)[None, :]
    table = torch.empty_like(angles)
    table[:, 0::2] = torch.sin(angles[:, 0::2])
    table[:, 1::2] = torch.cos(angles[:, 1::2])
    return table.float().unsqueeze(0)


def keep_tokens(tokens: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """Tokens where `hidden` (bool (B, N)) is False, as (B, N_visible, D); every row must keep the same number."""
    batch, _, width = tokens.shape
    visible = (~hidden).sum(dim=1)
    if not bool((visible == visible[0]).all()):
        raise ValueError("every clip in a batch must keep the same number of video tokens (use tube_mask)")
    index = (~hidden).nonzero()[:, 1].view(batch, -1)  # ascending positions of the kept tokens
    return tokens.gather(1, index[..., None].expand(-1, -1, width))
