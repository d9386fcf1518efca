"""Tubelet ViT video encoder (tiny/small/base, SimVTP's shared ViT-B/16) and SimVTP's MAE-style MVM decoder.

Frames arrive as uint8 (B, T, 3, H, W) and are normalised here, in the parameters' dtype, so bf16 engines that do
not cast inputs still get the right dtype and the loader moves 4x fewer bytes.
"""
from __future__ import annotations

import torch
from torch import nn

from violet.config import ModelConfig
from violet.models.transformer import TransformerStack, sincos_table

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FrameNormaliser(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1) * 255, persistent=False)

    def forward(self, frames: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """uint8 (B, T, 3, H, W) -> normalised (B, 3, T, H, W) in `dtype`."""
        video = frames.permute(0, 2, 1, 3, 4).to(dtype)
        return (video - self.mean.to(dtype)) / self.std.to(dtype)


def check_frames(frames: torch.Tensor, config: ModelConfig, need_tubelet_multiple: bool = True) -> None:
    _, num_frames, _, height, width = frames.shape
    if height != config.image_size or width != config.image_size:
        raise ValueError(f"frames are {height}x{width}, model expects {config.image_size}^2")
    if (need_tubelet_multiple and num_frames % config.tubelet) or num_frames > config.max_frames:
        raise ValueError(
            f"{num_frames} frames: must be a multiple of tubelet={config.tubelet} "
            f"and <= max_frames={config.max_frames}"
        )


class TubeletVideoEncoder(nn.Module):
    """Space-time patches (tubelet x patch x patch) -> position embeddings -> transformer (when it owns one).

    With `config.video_depth == 0` it only embeds: the model encodes the tokens with its shared (fusion) stack,
    as SimVTP runs one ViT for video, text and joint passes.
    """

    def __init__(self, config: ModelConfig, with_mask_token: bool) -> None:
        super().__init__()
        self.config = config
        width, patch, tubelet = config.width, config.patch_size, config.tubelet
        self.normalise = FrameNormaliser()
        self.patch_embed = nn.Conv3d(3, width, kernel_size=(tubelet, patch, patch), stride=(tubelet, patch, patch))
        grid = config.image_size // patch
        if config.video_pos == "learned":
            self.spatial_pos = nn.Parameter(torch.zeros(1, 1, grid * grid, width))
            self.temporal_pos = nn.Parameter(torch.zeros(1, config.max_frames // tubelet, 1, width))
            nn.init.trunc_normal_(self.spatial_pos, std=0.02)
            nn.init.trunc_normal_(self.temporal_pos, std=0.02)
        else:  # fixed, so not saved: VideoMAE checkpoints expect exactly this table
            self.register_buffer("pos_table", sincos_table(config.max_frames // tubelet * grid * grid, width),
                                 persistent=False)
        # Only VIOLET-style MVM replaces patches in the encoder input, so only then is there a mask token.
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, width)) if with_mask_token else None
        if self.mask_token is not None:
            nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.encoder = (
            TransformerStack(config.video_depth, width, config.heads, config.mlp_ratio, config.dropout)
            if config.video_depth > 0 else None
        )

    def embed(self, frames: torch.Tensor, mvm_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T'*N, D) tokens with positions; `mvm_mask` (bool (B, T'*N)) swaps in the mask token."""
        check_frames(frames, self.config)
        dtype = self.patch_embed.weight.dtype
        tokens = self.patch_embed(self.normalise(frames, dtype)).flatten(3).permute(0, 2, 3, 1)  # (B, T', N, D)
        batch, steps, patches, _ = tokens.shape
        if mvm_mask is not None:
            if self.mask_token is None:
                raise ValueError("replacing video patches needs a model built with the 'mvm' head and decoder_depth=0")
            mask = mvm_mask.view(batch, steps, patches, 1).to(dtype)
            tokens = tokens * (1 - mask) + self.mask_token.to(dtype) * mask
        if self.config.video_pos == "learned":
            tokens = tokens + self.spatial_pos + self.temporal_pos[:, :steps]
            return tokens.flatten(1, 2)
        return tokens.flatten(1, 2) + self.pos_table[:, : steps * patches].to(dtype)

    def forward(self, frames: torch.Tensor, mvm_mask: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.embed(frames, mvm_mask)
        return self.encoder(tokens) if self.encoder is not None else tokens


class MAEDecoder(nn.Module):
    """VideoMAE/SimVTP decoder: visible encoder outputs + mask tokens at the hidden positions, both with fixed
    sin-cos positions, through a narrow transformer; predicts the targets of the hidden tubes only."""

    def __init__(self, config: ModelConfig, output_dim: int) -> None:
        super().__init__()
        width = config.decoder_width
        grid = (config.image_size // config.patch_size) ** 2
        self.encoder_to_decoder = nn.Linear(config.width, width, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.register_buffer("pos_table", sincos_table(config.max_frames // config.tubelet * grid, width),
                             persistent=False)
        self.blocks = TransformerStack(config.decoder_depth, width, config.decoder_heads, config.mlp_ratio,
                                       config.dropout)
        self.head = nn.Linear(width, output_dim)

    def forward(self, visible: torch.Tensor, hidden_positions: torch.Tensor) -> torch.Tensor:
        """visible: (B, N_visible, D) encoder outputs in ascending token order; hidden_positions: bool (B, N).

        Returns (B * N_hidden, output_dim) in the row-major order of `hidden_positions`, like `targets[mask]`.
        """
        batch, total = hidden_positions.shape
        x = self.encoder_to_decoder(visible)
        pos = self.pos_table[:, :total].to(x.dtype).expand(batch, -1, -1)
        keep_index = (~hidden_positions).nonzero()[:, 1].view(batch, -1)
        hide_index = hidden_positions.nonzero()[:, 1].view(batch, -1)
        width = x.shape[-1]
        pos_visible = pos.gather(1, keep_index[..., None].expand(-1, -1, width))
        pos_hidden = pos.gather(1, hide_index[..., None].expand(-1, -1, width))
        full = torch.cat([x + pos_visible, self.mask_token.to(x.dtype) + pos_hidden], dim=1)
        out = self.blocks(full)[:, keep_index.shape[1]:]
        return self.head(out).flatten(0, 1)
