"""The one trainable module: video encoder, text encoder, cross-modal fusion and the heads a task asks for.

`forward(mode, ...)` selects which pass runs ("video", "text" or "fusion") so that every call goes through
the wrapper Accelerate/DeepSpeed put around the model (autocast, ZeRO-3 gathering, DDP hooks). It returns
features and head outputs only; the losses live in `violet.objectives`.

One class covers the family (docs/models.md):
- separate stacks (`tiny`/`small`/`base`): ViT video encoder, text transformer, fusion transformer;
- VIOLET (`violet-*`): Video Swin, BERT embeddings only (`text_depth=0`), a BERT-layout fusion transformer that
  also encodes text alone for the contrastive embedding;
- SimVTP (`simvtp-*`): `video_depth=text_depth=0`, so one ViT (the fusion stack) runs the video, text and joint
  passes; with `decoder_depth > 0` masked tubes never enter it and an MAE decoder reconstructs them.
"Tokens" returned by the video and text passes are what the fusion pass consumes (encoder outputs, or the
embeddings when the fusion stack is the shared encoder); "embed" is the normalised contrastive embedding.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertEmbeddings

from violet.config import ModelConfig
from violet.models.transformer import TransformerStack, keep_tokens
from violet.models.video_swin import SwinVideoEncoder
from violet.models.video_vit import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MAEDecoder,
    TubeletVideoEncoder,
)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "KNOWN_HEADS", "VideoLanguageModel", "count_parameters",
           "pixel_target_dim"]
KNOWN_HEADS = ("vtc", "vtm", "mlm", "mvm", "qa_oe")


def pixel_target_dim(config: ModelConfig) -> int:
    """Normalised pixels under one output video token: 3 x tubelet x region^2."""
    return 3 * config.tubelet * config.video_region ** 2


class MLMHead(nn.Module):
    """BERT's prediction head; the decoder weight is tied to the word embeddings."""

    def __init__(self, width: int, word_embeddings: nn.Embedding, unit_embeddings: bool) -> None:
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width))
        self.decoder = nn.Linear(width, word_embeddings.num_embeddings)
        self.decoder.weight = word_embeddings.weight
        if unit_embeddings:
            # Tied to embeddings at PyTorch's N(0, 1) init, a unit-variance input gives logits of std sqrt(width):
            # MLM started at ~39 (uniform is ln V ~ 10), its gradient norm ~80 took the whole clipping budget and
            # the contrastive loss of the same step sat at ln(batch) for ~100 steps. Starting the output norm's
            # scale at width^-1/2 gives logits of std ~1, as BERT's 0.02 embeddings do at width 768.
            # Through apply(): under ZeRO-3's sharded construction the norm is already partitioned here, and
            # DeepSpeed gathers a module's parameters for functions given to Module.apply.
            norm, scale = self.transform[2], width ** -0.5
            self.transform.apply(lambda module: nn.init.constant_(module.weight, scale) if module is norm else None)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden))


class AttentionPool(nn.Module):
    """A learned query attending over all of a clip's tokens, then a residual MLP (SigLIP's MAP head): the pooled
    vector can weight the few tokens where something happens, where a mean gives every background patch the same
    vote (`model.video_pool=attention`)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.probe = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.trunc_normal_(self.probe, std=0.02)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, D)."""
        probe = self.probe.to(tokens.dtype).expand(tokens.shape[0], -1, -1)
        pooled = self.attn(probe, tokens, tokens, need_weights=False)[0]
        return (pooled + self.mlp(self.norm(pooled)))[:, 0]


class VTCHead(nn.Module):
    """Projections to the shared embedding space and the learned temperature; with `config.video_pool` =
    attention also the clip's attention pool."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        width, segments = config.width, config.video_pool_segments
        self.text_proj = nn.Linear(width, config.embed_dim)
        # From the clip's mean, its segments' means concatenated, or its attention pool's output.
        self.video_proj = nn.Linear(width * segments, config.embed_dim)
        self.video_pool = (AttentionPool(width, config.heads, config.mlp_ratio)
                           if config.video_pool == "attention" else None)
        # Shape [1], not a scalar: DeepSpeed cannot partition 0-dim parameters across ranks. A fixed temperature
        # stays a (frozen) parameter so that checkpoints of either kind load into the other.
        self.logit_scale = nn.Parameter(torch.full((1,), math.log(1 / config.temperature)),
                                        requires_grad=config.learn_temperature)

    def scale(self) -> torch.Tensor:
        # Clamped here (inside forward) because an in-place clamp outside the engine is lost under ZeRO.
        return self.logit_scale.clamp(max=math.log(100.0)).exp()


def classifier(width: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, width * 2), nn.GELU(), nn.LayerNorm(width * 2), nn.Linear(width * 2, outputs))


class TextEncoder(nn.Module):
    """BERT embeddings (transformers' BertEmbeddings) and, when `text_depth > 0`, its own transformer stack."""

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        bert = BertConfig(
            vocab_size=vocab_size, hidden_size=config.width, max_position_embeddings=config.max_text_len,
            type_vocab_size=2, hidden_dropout_prob=config.dropout,
        )
        self.embeddings = BertEmbeddings(bert)
        self.encoder = (
            TransformerStack(config.text_depth, config.width, config.heads, config.mlp_ratio, config.dropout,
                             config.norm_first)
            if config.text_depth > 0 else None
        )

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        tokens = self.embeddings(input_ids=ids)
        return self.encoder(tokens, key_padding_mask=mask) if self.encoder is not None else tokens


class VideoLanguageModel(nn.Module):
    def __init__(
        self, config: ModelConfig, vocab_size: int, heads: Iterable[str], num_answers: int = 0,
        mvm_output_dim: int = 0,
    ) -> None:
        """`mvm_output_dim`: outputs per video token of the MVM head (0 = normalised pixels)."""
        super().__init__()
        self.config = config
        heads = tuple(heads)
        self.mae_style = config.decoder_depth > 0
        with_mask_token = "mvm" in heads and not self.mae_style
        if config.video_encoder == "swin":
            self.video = SwinVideoEncoder(config, with_mask_token)
        else:
            self.video = TubeletVideoEncoder(config, with_mask_token)
        self.text = TextEncoder(config, vocab_size)
        self.modality = nn.Embedding(2, config.width)  # 0 = text, 1 = video, added before the joint pass
        self.fusion = TransformerStack(config.fusion_depth, config.width, config.heads, config.mlp_ratio,
                                       config.dropout, config.norm_first)
        self.heads = nn.ModuleDict()
        for name in heads:  # only the heads the task needs, so none sits without gradients
            if name not in KNOWN_HEADS:
                raise KeyError(f"unknown head {name!r}; known: {', '.join(KNOWN_HEADS)}")
            self.heads[name] = self._build_head(name, num_answers, mvm_output_dim or pixel_target_dim(config))
        if config.init_std > 0:
            self.apply(self._init_weights)
        self.set_grad_checkpointing(config.grad_checkpointing)

    @property
    def video_has_encoder(self) -> bool:
        return not isinstance(self.video, TubeletVideoEncoder) or self.video.encoder is not None

    def _build_head(self, name: str, num_answers: int, mvm_dim: int) -> nn.Module:
        width = self.config.width
        if name == "vtc":
            return VTCHead(self.config)
        if name == "vtm":
            return classifier(width, 2)
        if name == "mlm":
            return MLMHead(width, self.text.embeddings.word_embeddings, unit_embeddings=self.config.init_std == 0)
        if name == "mvm":
            return MAEDecoder(self.config, mvm_dim) if self.mae_style else nn.Linear(width, mvm_dim)
        if num_answers < 1:
            raise ValueError("the qa_oe head needs num_answers >= 1 (the answer vocabulary is empty)")
        return classifier(width, num_answers)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=self.config.init_std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.trunc_normal_(module.weight, std=self.config.init_std)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        stacks = [self.fusion, getattr(self.video, "encoder", None), self.text.encoder]
        if "mvm" in self.heads and self.mae_style:
            stacks.append(self.heads["mvm"].blocks)
        for stack in stacks:
            if stack is not None:
                stack.grad_checkpointing = enable
        if isinstance(self.video, SwinVideoEncoder):
            self.video.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        """Parameter names excluded from weight decay: position/bias tables, mask tokens, embeddings, temperature."""
        names = set()
        for name, _ in self.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if (leaf in ("spatial_pos", "temporal_pos", "mask_token", "logit_scale", "relative_position_bias_table",
                         "probe")
                    or "embeddings" in name or name.startswith("modality")):
                names.add(name)
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
        """`mvm_mask` (bool (B, N) over output video tokens): hidden tokens. VIOLET-style models swap in a mask
        token; MAE-style models drop them, so the encoder runs on the visible tokens only."""
        tokens = self.video(frames, None if self.mae_style else mvm_mask)
        if self.mae_style and mvm_mask is not None:
            tokens = keep_tokens(tokens, mvm_mask)
        encoded = tokens if self.video_has_encoder else self.fusion(tokens)
        out = {"tokens": tokens}
        if "vtc" in self.heads and (mvm_mask is None or self.mae_style):
            vtc = self.heads["vtc"]
            segments = self.config.video_pool_segments
            pooled = segment_means(encoded, segments) if vtc.video_pool is None else vtc.video_pool(encoded)
            out["embed"] = F.normalize(vtc.video_proj(pooled), dim=-1)
            out["logit_scale"] = vtc.scale()
            if segments > 1:  # the same segment means in the other order: an order negative without a second pass
                rolled = pooled.unflatten(-1, (segments, -1)).roll(segments // 2, dims=1).flatten(1)
                out["order_swapped_embed"] = F.normalize(vtc.video_proj(rolled), dim=-1)
        return out

    def _encode_text(self, ids: torch.Tensor, mask: torch.Tensor, embed: bool = True) -> dict[str, torch.Tensor]:
        """`embed=False` skips the contrastive embedding (for VIOLET/SimVTP a text-only pass of the fusion stack),
        e.g. for masked text that only feeds the joint pass."""
        tokens = self.text(ids, mask)
        out = {"tokens": tokens}
        if "vtc" in self.heads and embed:
            encoded = tokens if self.text.encoder is not None else self.fusion(tokens, key_padding_mask=mask)
            vtc = self.heads["vtc"]
            if self.config.text_pool == "mean":
                real = mask.to(encoded.dtype)[..., None]
                pooled = (encoded * real).sum(dim=1) / real.sum(dim=1).clamp(min=1)
            else:
                pooled = encoded[:, 0]
            out["embed"] = F.normalize(vtc.text_proj(pooled), dim=-1)
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
        """Joint transformer over [text; video]. *_positions are bool masks selecting where MLM/MVM predict
        (for MAE-style models `mvm_positions` marks the hidden tubes of the full grid; `video_tokens` are the
        visible ones)."""
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
            video_hidden = hidden[:, num_text:]
            if self.mae_style:
                out["mvm_pred"] = self.heads["mvm"](video_hidden, mvm_positions)
            else:
                out["mvm_pred"] = self.heads["mvm"](video_hidden[mvm_positions])
        return out


def segment_means(tokens: torch.Tensor, segments: int) -> torch.Tensor:
    """(B, N, D) -> (B, segments x D): the means over `segments` consecutive runs of tokens, concatenated. Every
    video encoder here lays its tokens out time-major (all of a time step's patches, then the next step's), so
    the runs are stretches of time, in order; with more segments than time steps a run is part of one step."""
    if segments == 1:
        return tokens.mean(dim=1)
    if tokens.shape[1] < segments:
        raise ValueError(f"model.video_pool_segments={segments} but the clip has only {tokens.shape[1]} tokens")
    return torch.cat([run.mean(dim=1) for run in tokens.tensor_split(segments, dim=1)], dim=-1)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
