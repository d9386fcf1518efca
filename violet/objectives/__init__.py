"""Pretraining and fine-tuning objectives; each returns a dict of named, already-weighted loss terms."""
from violet.objectives.masking import mask_text_tokens, random_patch_mask, tube_mask
from violet.objectives.matching import contrastive_and_matching, matching_negatives
from violet.objectives.mlm import mlm_loss
from violet.objectives.mvm import mvm_loss, pixel_targets
from violet.objectives.mvm_targets import MVMTarget, hog_targets, load_image_tokenizer
from violet.objectives.temporal import (
    check_temporal_negative, reverse_time, swap_halves, temporal_order_loss, temporal_order_terms,
)
from violet.objectives.vtc import gather_with_grad, video_keys, vtc_loss
from violet.objectives.vtm import match_score, sample_hard_negatives, vtm_loss

__all__ = [
    "MVMTarget", "check_temporal_negative", "contrastive_and_matching", "gather_with_grad", "hog_targets",
    "load_image_tokenizer",
    "mask_text_tokens", "match_score", "matching_negatives", "mlm_loss", "mvm_loss", "pixel_targets",
    "random_patch_mask", "reverse_time", "sample_hard_negatives", "swap_halves", "temporal_order_loss",
    "temporal_order_terms", "tube_mask", "video_keys",
    "vtc_loss", "vtm_loss",
]
