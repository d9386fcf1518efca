"""Video-text contrastive loss over the global batch, with embeddings gathered across ranks keeping gradients."""
from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F

from violet.objectives.global_batch import gather_with_grad, local_offset, rank_sizes


def vtc_loss(
    text_embed: torch.Tensor,
    video_embed: torch.Tensor,
    logit_scale: torch.Tensor,
    weight: float,
    video_ids: torch.Tensor | None = None,
    sizes: list[int] | None = None,
) -> dict:
    """Symmetric InfoNCE. Embeddings are L2-normalised (B, D) on this rank; labels index the global batch.

    `video_ids` (B,) marks captions of the same video in the batch as positives too (multi-positive targets),
    so two captions of one clip are not pushed apart. Each rank averages over its own rows; the gradient
    averaging of DDP/DeepSpeed then yields the global-batch mean.
    """
    sizes = sizes or rank_sizes(text_embed.shape[0], text_embed.device)  # rows per rank, if not known yet
    all_text = gather_with_grad(text_embed, sizes)
    all_video = gather_with_grad(video_embed, sizes)
    scale = logit_scale.float().squeeze()
    logits_t2v = scale * text_embed.float() @ all_video.float().T  # (B, global B)
    logits_v2t = scale * video_embed.float() @ all_text.float().T
    batch = text_embed.shape[0]
    if video_ids is None:
        labels = torch.arange(batch, device=text_embed.device) + local_offset(sizes)
        loss_t2v = F.cross_entropy(logits_t2v, labels)
        loss_v2t = F.cross_entropy(logits_v2t, labels)
    else:
        all_ids = gather_with_grad(video_ids, sizes)
        targets = (video_ids[:, None] == all_ids[None, :]).float()
        targets = targets / targets.sum(dim=1, keepdim=True)
        loss_t2v = torch.sum(-targets * F.log_softmax(logits_t2v, dim=1), dim=1).mean()
        loss_v2t = torch.sum(-targets * F.log_softmax(logits_v2t, dim=1), dim=1).mean()
    return {"vtc": weight * (loss_t2v + loss_v2t) / 2, "temperature": (1.0 / scale).detach()}


def video_keys(videos: list[str], device: torch.device) -> torch.Tensor:
    """Stable integer ids of video paths (same on every rank), to mark captions of the same clip as positives."""
    return torch.tensor([zlib.crc32(video.encode()) for video in videos], dtype=torch.long, device=device)
