"""Video Swin Transformer (3D shifted windows, patch 2x4x4) for the VIOLET presets.

The backbone is torchvision's `SwinTransformer3d` (the `swin3d_b` / `swin3d_s` architecture, so its state dicts
and the original Video Swin checkpoints load by name), with the window attention computed by
`scaled_dot_product_attention`: relative position bias and the shifted-window mask go in as its additive mask.
The last stage's tokens are projected to the fusion width and get space/time position embeddings, because the
fusion transformer attends across windows and has no other notion of where a token sits.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from torchvision.models.video.swin_transformer import (
    PatchMerging,
    ShiftedWindowAttention3d,
    SwinTransformer3d,
    SwinTransformerBlock,
    _compute_attention_mask_3d,
    _compute_pad_size_3d,
    _get_window_and_shift_size,
)

from violet.config import ModelConfig
from violet.models.transformer import BERT_LAYER_NORM_EPS
from violet.models.video_vit import FrameNormaliser, check_frames


class SDPAWindowAttention3d(ShiftedWindowAttention3d):
    """torchvision's 3D (shifted) window attention, same parameters, attention through SDPA."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, h, w, c = x.shape
        window, shift = _get_window_and_shift_size(self.shift_size.copy(), [t, h, w], self.window_size.copy())
        bias = self.get_relative_position_bias(window).to(x.dtype)  # (1, heads, V, V)
        pad = _compute_pad_size_3d((t, h, w), tuple(window))
        x = F.pad(x, (0, 0, 0, pad[2], 0, pad[1], 0, pad[0]))
        _, tp, hp, wp, _ = x.shape
        if sum(shift) > 0:
            x = torch.roll(x, shifts=(-shift[0], -shift[1], -shift[2]), dims=(1, 2, 3))
        grid = (tp // window[0], hp // window[1], wp // window[2])
        num_windows, volume = grid[0] * grid[1] * grid[2], window[0] * window[1] * window[2]
        x = x.view(b, grid[0], window[0], grid[1], window[1], grid[2], window[2], c)
        x = x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, num_windows, volume, c)
        heads = self.num_heads
        qkv = self.qkv(x).view(b, num_windows, volume, 3, heads, c // heads).permute(3, 0, 1, 4, 2, 5)
        mask = bias.unsqueeze(1)  # (1, 1, heads, V, V): broadcast over batch and windows
        if sum(shift) > 0:
            shifted = _compute_attention_mask_3d(x, (tp, hp, wp), tuple(window), tuple(shift)).to(x.dtype)
            mask = mask + shifted[None, :, None]  # (1, windows, 1, V, V)
        out = F.scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2], attn_mask=mask, dropout_p=self.attention_dropout if self.training else 0.0
        )  # (b, windows, heads, V, head_dim)
        out = self.proj(out.transpose(2, 3).reshape(b, num_windows, volume, c))
        out = F.dropout(out, p=self.dropout, training=self.training)
        out = out.view(b, grid[0], grid[1], grid[2], window[0], window[1], window[2], c)
        out = out.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, tp, hp, wp, c)
        if sum(shift) > 0:
            out = torch.roll(out, shifts=(shift[0], shift[1], shift[2]), dims=(1, 2, 3))
        return out[:, :t, :h, :w].contiguous()


def _sdpa_block(*args, attn_layer: type | None = None, **kwargs) -> SwinTransformerBlock:
    # torchvision passes its own attention class explicitly; swap in the SDPA one (same parameter names).
    return SwinTransformerBlock(*args, attn_layer=SDPAWindowAttention3d, **kwargs)


class SwinVideoEncoder(nn.Module):
    """uint8 frames -> Video Swin -> last-stage tokens projected to `config.width` with positions: (B, T'*h*w, D)."""

    def __init__(self, config: ModelConfig, with_mask_token: bool) -> None:
        super().__init__()
        self.config = config
        self.normalise = FrameNormaliser()
        depths = config.swin_depths_list
        self.backbone = SwinTransformer3d(
            patch_size=[config.tubelet, config.patch_size, config.patch_size], embed_dim=config.swin_embed_dim,
            depths=depths, num_heads=config.swin_heads_list, window_size=config.swin_window_list,
            mlp_ratio=config.mlp_ratio, dropout=config.dropout, stochastic_depth_prob=config.drop_path,
            num_classes=1, block=_sdpa_block,
        )
        self.backbone.head = nn.Identity()  # Kinetics classifier: not part of a video-language model
        self.backbone.avgpool = nn.Identity()
        features = config.swin_embed_dim * 2 ** (len(depths) - 1)
        self.proj = nn.Linear(features, config.width)
        grid = config.image_size // config.video_region
        self.spatial_pos = nn.Parameter(torch.zeros(1, 1, grid * grid, config.width))
        self.temporal_pos = nn.Parameter(torch.zeros(1, math.ceil(config.max_frames / config.tubelet), 1, config.width))
        nn.init.trunc_normal_(self.spatial_pos, std=0.02)
        nn.init.trunc_normal_(self.temporal_pos, std=0.02)
        self.norm = nn.LayerNorm(config.width, eps=1e-5 if config.norm_first else BERT_LAYER_NORM_EPS)
        # VIOLET's MVM hides whole output tokens: the mask token replaces every patch embedding under them.
        self.mask_token = nn.Parameter(torch.zeros(config.swin_embed_dim)) if with_mask_token else None
        if self.mask_token is not None:
            nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.grad_checkpointing = False

    def backbone_features(self, frames: torch.Tensor, mvm_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T', h, w, C) last-stage features after the backbone's final norm."""
        check_frames(frames, self.config, need_tubelet_multiple=False)  # torchvision pads a partial tubelet
        dtype = self.backbone.patch_embed.proj.weight.dtype
        x = self.backbone.patch_embed(self.normalise(frames, dtype))  # (B, T', H', W', C)
        if mvm_mask is not None:
            if self.mask_token is None:
                raise ValueError("replacing video patches needs a model built with the 'mvm' head")
            batch, steps, height, width, _ = x.shape
            factor = self.config.video_region // self.config.patch_size
            mask = mvm_mask.view(batch, steps, height // factor, width // factor)
            mask = mask.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)[..., None].to(dtype)
            x = x * (1 - mask) + self.mask_token.to(dtype) * mask
        x = self.backbone.pos_drop(x)
        for module in self.backbone.features:
            blocks = [module] if isinstance(module, PatchMerging) else list(module)
            for block in blocks:
                if self.grad_checkpointing and self.training and not isinstance(block, PatchMerging):
                    x = checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x)
        return self.backbone.norm(x)

    def forward(self, frames: torch.Tensor, mvm_mask: torch.Tensor | None = None) -> torch.Tensor:
        features = self.backbone_features(frames, mvm_mask)
        steps = features.shape[1]
        tokens = self.proj(features.flatten(2, 3))  # (B, T', h*w, D)
        tokens = tokens + self.spatial_pos + self.temporal_pos[:, :steps]
        return self.norm(tokens.flatten(1, 2))
