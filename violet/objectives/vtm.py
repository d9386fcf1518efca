"""Video-text matching: positives plus hard negatives sampled from contrastive similarities (ALBEF-style)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def sample_hard_negatives(
    similarity: torch.Tensor, same_video: torch.Tensor, hard: bool, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each text pick a negative video and for each video a negative text.

    similarity: (B, B) text x video; same_video: bool (B, B) True where the pair is a positive (same clip).
    Hard negatives are drawn with probability softmax(similarity) over non-positives; otherwise uniformly.
    Rows with no valid negative (a batch of one clip) fall back to a uniform draw over the batch.
    """
    if not torch.isfinite(similarity).all():
        # A diverged model (e.g. too high a learning rate): say so here, where it shows first, rather than let
        # multinomial fail on NaN probabilities with a message about probability tensors.
        raise FloatingPointError("non-finite video-text similarities while drawing VTM negatives: the model has "
                                 "diverged; lower train.lr (the last checkpoint is intact)")
    weights = torch.softmax(similarity.float(), dim=1) if hard else torch.ones_like(similarity, dtype=torch.float)
    weights = weights.masked_fill(same_video, 0.0) + 1e-12  # epsilon keeps multinomial valid for degenerate rows
    video_for_text = torch.multinomial(weights, 1, generator=generator).squeeze(1)
    weights_t = torch.softmax(similarity.float().T, dim=1) if hard else torch.ones_like(similarity.T, dtype=torch.float)
    weights_t = weights_t.masked_fill(same_video.T, 0.0) + 1e-12
    text_for_video = torch.multinomial(weights_t, 1, generator=generator).squeeze(1)
    return video_for_text, text_for_video


def match_score(vtm_logits: torch.Tensor) -> torch.Tensor:
    """Log-odds of "match" from the 2-way VTM head, the score used for re-ranking and option scoring."""
    logits = vtm_logits.float()
    return logits[:, 1] - logits[:, 0]


def vtm_loss(
    fuse: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    video_tokens: torch.Tensor,
    negative_videos: torch.Tensor,
    negative_texts: torch.Tensor,
    negative_text_masks: torch.Tensor,
    weight: float,
) -> dict:
    """One fused pass over B positives, B (text, negative video) and B (negative text, video) pairs.

    The negatives are already selected rows (from this rank's batch or from the global batch); `fuse` returns
    (N, 2) match logits. Texts of different padded lengths are padded to the longest first.
    """
    batch = text_tokens.shape[0]
    length = max(text_tokens.shape[1], negative_texts.shape[1])
    text_tokens, negative_texts = pad_tokens(text_tokens, length), pad_tokens(negative_texts, length)
    text_mask, negative_text_masks = pad_tokens(text_mask, length), pad_tokens(negative_text_masks, length)
    all_text = torch.cat([text_tokens, text_tokens, negative_texts])
    all_mask = torch.cat([text_mask, text_mask, negative_text_masks])
    all_video = torch.cat([video_tokens, negative_videos, video_tokens])
    logits = fuse(all_text, all_mask, all_video)
    labels = torch.cat([torch.ones(batch), torch.zeros(2 * batch)]).long().to(logits.device)
    loss = F.cross_entropy(logits.float(), labels)
    accuracy = (logits.argmax(dim=-1) == labels).float().mean()
    return {"vtm": weight * loss, "vtm_acc": accuracy.detach()}


def pad_tokens(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """Right-pad dim 1 (sequence) with zeros; a zero attention mask keeps the padding out of attention."""
    if tensor.shape[1] >= length:
        return tensor
    pad = tensor.new_zeros((tensor.shape[0], length - tensor.shape[1], *tensor.shape[2:]))
    return torch.cat([tensor, pad], dim=1)
