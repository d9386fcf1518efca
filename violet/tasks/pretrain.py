"""Pretraining: MLM + MVM + VTM + VTC on video-caption pairs, weighted from the config (VIOLET's recipe,
with normalised-pixel MVM targets). Evaluation is zero-shot retrieval on the captions of the chosen split."""
from __future__ import annotations

from typing import Any

import torch

from violet.objectives import mask_text_tokens, mlm_loss, mvm_loss, pixel_targets, random_patch_mask
from violet.tasks.registry import register
from violet.tasks.retrieval import RetrievalTask


@register("pretrain")
class PretrainTask(RetrievalTask):
    heads = ("vtc", "vtm", "mlm", "mvm")
    defaults = {"train": {"epochs": 40, "lr": 5e-4}}

    def training_step(self, model: Any, batch: dict[str, Any], generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        objective, model_config = self.config.objective, self.config.model
        terms, video, _ = self.contrastive_and_matching(model, batch, generator)

        # One more fused pass with masked words and masked video patches, predicting both.
        masked_ids, mlm_positions = mask_text_tokens(
            batch["text_ids"], batch["text_mask"], self.special_ids.to(batch["text_ids"].device),
            self.tokenizer.mask_token_id, len(self.tokenizer), objective.mlm_prob, generator,
        )
        num_patches = video["tokens"].shape[1]
        mvm_mask = random_patch_mask(
            batch["frames"].shape[0], num_patches, objective.mvm_ratio, batch["frames"].device, generator
        )
        masked_video = model("video", frames=batch["frames"], mvm_mask=mvm_mask)
        masked_text = model("text", ids=masked_ids, mask=batch["text_mask"])
        fused = model(
            "fusion", text_tokens=masked_text["tokens"], text_mask=batch["text_mask"],
            video_tokens=masked_video["tokens"], mlm_positions=mlm_positions, mvm_positions=mvm_mask,
        )
        terms.update(mlm_loss(fused["mlm_logits"], batch["text_ids"], mlm_positions, objective.mlm_weight))
        targets = pixel_targets(batch["frames"], model_config.patch_size, model_config.tubelet)
        terms.update(mvm_loss(fused["mvm_pred"], targets, mvm_mask, objective.mvm_weight))
        loss = terms["vtc"] + terms["vtm"] + terms["mlm"] + terms["mvm"]
        return loss, terms
