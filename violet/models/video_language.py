"""The one trainable module: video encoder, text encoder, cross-modal fusion and the heads a task asks for.

`forward(mode, ...)` selects which encoder runs ("video", "text" or "fusion") so that every call goes through
the wrapper Accelerate/DeepSpeed put around the model (autocast, ZeRO-3 gathering, DDP hooks). It returns
features and head outputs only; the losses live in `violet.objectives`.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertEmbeddings

from violet.config import ModelConfig
from violet.models.transformer import TransformerStack

# Frames arrive as uint8 and are normalised inside the model, in the parameters' dtype, so bf16 engines that
# do not cast inputs still get the right dtype, and the loader moves 4x fewer bytes.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KNOWN_HEADS = ("vtc", "vtm", "mlm", "mvm", "qa_oe")


class VideoEncoder(nn.Module):
    """Space-time patches (tubelet x patch x patch) -> factorised position embeddings -> transformer."""

    def __init__(self, config: ModelConfig, with_mask_token: bool) -> None:
        super().__init__()
        self.config = config
        width, patch, tubelet = config.width, config.patch_size, config.tubelet
        self.patch_embed = nn.Conv3d(3, width, kernel_size=(tubelet, patch, patch), stride=(tubelet, patch, patch))
        grid = config.image_size // patch
        self.spatial_pos = nn.Parameter(torch.zeros(1, 1, grid * grid, width))
        self.temporal_pos = nn.Parameter(torch.zeros(1, config.max_frames // tubelet, 1, width))
        # Only MVM replaces patches, so only models with an MVM head carry a (trained) mask token.
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, width)) if with_mask_token else None
        self.encoder = TransformerStack(config.video_depth, width, config.heads, config.mlp_ratio, config.dropout)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1) * 255, persistent=False)
        nn.init.trunc_normal_(self.spatial_pos, std=0.02)
        nn.init.trunc_normal_(self.temporal_pos, std=0.02)
        if self.mask_token is not None:
            nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, frames: torch.Tensor, mvm_mask: torch.Tensor | None = None) -> torch.Tensor:
        """frames: uint8 (B, T, 3, H, W); mvm_mask: bool (B, T/tubelet * grid^2), True = replace by mask token."""
        batch, num_frames, _, height, width = frames.shape
        if height != self.config.image_size or width != self.config.image_size:
            raise ValueError(f"frames are {height}x{width}, model expects {self.config.image_size}^2")
        if num_frames % self.config.tubelet or num_frames > self.config.max_frames:
            raise ValueError(
                f"{num_frames} frames: must be a multiple of tubelet={self.config.tubelet} "
                f"and <= max_frames={self.config.max_frames}"
            )
        dtype = self.patch_embed.weight.dtype
        video = frames.permute(0, 2, 1, 3, 4).to(dtype)  # (B, 3, T, H, W)
        video = (video - self.mean.to(dtype)) / self.std.to(dtype)
        tokens = self.patch_embed(video).flatten(3).permute(0, 2, 3, 1)  # (B, T', N, D)
        if mvm_mask is not None:
            if self.mask_token is None:
                raise ValueError("video masking needs a model built with the 'mvm' head")
            mask = mvm_mask.view(batch, tokens.shape[1], tokens.shape[2], 1).to(dtype)
            tokens = tokens * (1 - mask) + self.mask_token.to(dtype) * mask
        tokens = tokens + self.spatial_pos + self.temporal_pos[:, : tokens.shape[1]]
        return self.encoder(tokens.flatten(1, 2))


class TextEncoder(nn.Module):
    """BERT-style embeddings (transformers' BertEmbeddings, randomly initialised) and a transformer stack."""

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        bert = BertConfig(
            vocab_size=vocab_size,
            hidden_size=config.width,
            max_position_embeddings=config.max_text_len,
            type_vocab_size=2,
            hidden_dropout_prob=config.dropout,
        )
        self.embeddings = BertEmbeddings(bert)
        self.encoder = TransformerStack(config.text_depth, config.width, config.heads, config.mlp_ratio, config.dropout)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.embeddings(input_ids=ids), key_padding_mask=mask)


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


def _classifier(width: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, width * 2), nn.GELU(), nn.LayerNorm(width * 2), nn.Linear(width * 2, outputs))


class VideoLanguageModel(nn.Module):
    def __init__(self, config: ModelConfig, vocab_size: int, heads: Iterable[str], num_answers: int = 0) -> None:
        super().__init__()
        self.config = config
        heads = tuple(heads)
        self.video = VideoEncoder(config, with_mask_token="mvm" in heads)
        self.text = TextEncoder(config, vocab_size)
        self.modality = nn.Embedding(2, config.width)  # 0 = text, 1 = video, added before fusion
        self.fusion = TransformerStack(config.fusion_depth, config.width, config.heads, config.mlp_ratio, config.dropout)
        self.heads = nn.ModuleDict()
        for name in heads:  # only the heads the task needs, so none sits without gradients (GUIDE §5.11)
            if name not in KNOWN_HEADS:
                raise KeyError(f"unknown head {name!r}; known: {', '.join(KNOWN_HEADS)}")
            self.heads[name] = self._build_head(name, num_answers)
        self.apply(self._init_weights)
        self.set_grad_checkpointing(config.grad_checkpointing)

    def _build_head(self, name: str, num_answers: int) -> nn.Module:
        width = self.config.width
        if name == "vtc":
            return VTCHead(width, self.config.embed_dim)
        if name == "vtm":
            return _classifier(width, 2)
        if name == "mlm":
            return MLMHead(width, self.text.embeddings.word_embeddings)
        if name == "mvm":
            patch = self.config.patch_size
            return nn.Linear(width, 3 * self.config.tubelet * patch * patch)
        if num_answers < 1:
            raise ValueError("the qa_oe head needs num_answers >= 1 (the answer vocabulary is empty)")
        return _classifier(width, num_answers)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.trunc_normal_(module.weight, std=0.02)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stack in (self.video.encoder, self.text.encoder, self.fusion):
            stack.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        """Parameter names excluded from weight decay: position/type tables, tokens and the temperature."""
        names = {"video.spatial_pos", "video.temporal_pos", "video.mask_token", "heads.vtc.logit_scale"}
        names |= {name for name, _ in self.named_parameters() if "embeddings" in name or name.startswith("modality")}
        return names

    def forward(self, mode: str, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        if mode == "video":
            return self._encode_video(**inputs)
        if mode == "text":
            return self._encode_text(**inputs)
        if mode == "fusion":
            return self._fuse(**inputs)
        raise ValueError(f"unknown mode {mode!r}; use 'video', 'text' or 'fusion'")

    def _encode_video(self, frames: torch.Tensor, mvm_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        tokens = self.video(frames, mvm_mask)
        out = {"tokens": tokens}
        if "vtc" in self.heads and mvm_mask is None:
            vtc = self.heads["vtc"]
            out["embed"] = F.normalize(vtc.video_proj(tokens.mean(dim=1)), dim=-1)
            out["logit_scale"] = vtc.scale()
        return out

    def _encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = self.text(ids, mask)
        out = {"tokens": tokens}
        if "vtc" in self.heads:
            vtc = self.heads["vtc"]
            out["embed"] = F.normalize(vtc.text_proj(tokens[:, 0]), dim=-1)
            out["logit_scale"] = vtc.scale()
        return out

    def _fuse(
        self,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        video_tokens: torch.Tensor,
        mlm_positions: torch.Tensor | None = None,
        mvm_positions: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Joint transformer over [text; video]. *_positions are bool masks selecting where MLM/MVM predict."""
        num_text = text_tokens.shape[1]
        joint = torch.cat(
            [text_tokens + self.modality.weight[0], video_tokens + self.modality.weight[1]], dim=1
        )
        video_valid = torch.ones(video_tokens.shape[:2], dtype=torch.bool, device=video_tokens.device)
        hidden = self.fusion(joint, key_padding_mask=torch.cat([text_mask.bool(), video_valid], dim=1))
        cls = hidden[:, 0]
        out = {"cls": cls}
        if "vtm" in self.heads:
            out["vtm_logits"] = self.heads["vtm"](cls)
        if "qa_oe" in self.heads:
            out["answer_logits"] = self.heads["qa_oe"](cls)
        if mlm_positions is not None:
            out["mlm_logits"] = self.heads["mlm"](hidden[:, :num_text][mlm_positions])
        if mvm_positions is not None:
            out["mvm_pred"] = self.heads["mvm"](hidden[:, num_text:][mvm_positions])
        return out


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
