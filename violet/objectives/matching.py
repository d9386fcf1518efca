"""VTC and VTM in one step: the contrastive loss over the global batch, then the matching loss on the positive
pairs and hard negatives drawn from the contrastive similarities (ALBEF-style). Pretraining and retrieval
fine-tuning both train with it; `model` is any callable with the VideoLanguageModel modes ("video", "text",
"fusion"), so this module needs no model code.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from violet.config import ObjectiveConfig
from violet.objectives.global_batch import gather_with_grad, local_offset, rank_sizes
from violet.objectives.vtc import video_keys, vtc_loss
from violet.objectives.vtm import pad_tokens, sample_hard_negatives, vtm_loss

POOLINGS = ("global", "local")


def contrastive_and_matching(
    model: Callable[..., dict],
    batch: dict[str, Any],
    objective: ObjectiveConfig,
    generator: torch.Generator | None,
    *,
    matching: bool,
    text_length: int,
    video_mask: torch.Tensor | None = None,
) -> tuple[dict, dict, dict]:
    """VTC over the global batch and VTM on positives + hard negatives; returns (terms, video, text).

    `generator` draws the negatives; a task passes its rank-shared one (Task.global_generator) so that every rank
    draws the same pairs. `matching=False` (a model without VTM head) gives a zero "vtm" term and skips the fused
    pass. `text_length` is the length captions are padded to before a global-batch gather (model.max_text_len).
    `video_mask` (bool (B, N), True = hidden) makes MAE-style models (SimVTP) encode visible tubes only.
    """
    video = model("video", frames=batch["frames"], mvm_mask=video_mask)
    text = model("text", ids=batch["text_ids"], mask=batch["text_mask"])
    keys = video_keys(batch["video"], batch["frames"].device)
    sizes = rank_sizes(keys.shape[0], keys.device)  # exchanged once, used by every global-batch gather below
    terms = vtc_loss(text["embed"], video["embed"], text["logit_scale"], objective.vtc_weight, keys, sizes)
    if not matching:
        terms["vtm"] = torch.zeros((), device=keys.device)
        return terms, video, text
    negatives = matching_negatives(
        text, video, batch["text_mask"], keys, sizes, pooling=objective.vtm_negatives,
        hard=objective.vtm_hard_negatives, generator=generator, text_length=text_length,
    )
    terms.update(
        vtm_loss(
            lambda t, m, v: model("fusion", text_tokens=t, text_mask=m, video_tokens=v)["vtm_logits"],
            text["tokens"], batch["text_mask"], video["tokens"], *negatives, objective.vtm_weight,
        )
    )
    return terms, video, text


def matching_negatives(
    text: dict,
    video: dict,
    text_mask: torch.Tensor,
    keys: torch.Tensor,
    sizes: list[int],
    *,
    pooling: str,
    hard: bool,
    generator: torch.Generator | None,
    text_length: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(negative video tokens per text, negative text tokens per video, their masks), hard-sampled.

    `text`/`video` are the encoder outputs ("embed", "tokens") of this rank's rows, `keys` their video ids (rows
    with equal keys are positives, never negatives of each other) and `sizes` the rows of every rank.
    With pooling="global" the candidates are the global batch and the draw is made for the whole global batch
    with `generator`, each rank keeping its own rows: the same pairs as one process holding the whole batch,
    provided every rank passes an equally seeded generator. "local" samples within this rank's batch only.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"objective.vtm_negatives must be global|local, got {pooling!r}")
    pooled = pooling == "global"
    sizes = sizes if pooled else [keys.shape[0]]
    gather = (lambda tensor: gather_with_grad(tensor, sizes)) if pooled else (lambda tensor: tensor)
    with torch.no_grad():
        all_keys = gather(keys)
        similarity = gather(text["embed"].detach()).float() @ gather(video["embed"].detach()).float().T
        video_for_text, text_for_video = sample_hard_negatives(
            similarity.cpu(), (all_keys[:, None] == all_keys[None, :]).cpu(), hard, generator,
        )
        mine = slice(local_offset(sizes), local_offset(sizes) + keys.shape[0]) if pooled else slice(None)
        video_for_text = video_for_text[mine].to(keys.device)
        text_for_video = text_for_video[mine].to(keys.device)
    # Token pools keep gradients: a negative drawn from another rank trains that rank's encoders too.
    length = text_length if pooled else text_mask.shape[1]  # equal shapes on every rank for the gather
    text_pool = gather(pad_tokens(text["tokens"], length))
    mask_pool = gather(pad_tokens(text_mask, length))
    video_pool = gather(video["tokens"])
    return video_pool[video_for_text], text_pool[text_for_video], mask_pool[text_for_video]
