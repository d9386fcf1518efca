"""Pretraining and fine-tuning objectives; each returns a dict of named, already-weighted loss terms."""
from violet.objectives.masking import mask_text_tokens, random_patch_mask
from violet.objectives.mlm import mlm_loss
from violet.objectives.mvm import mvm_loss, pixel_targets
from violet.objectives.vtc import gather_with_grad, vtc_loss
from violet.objectives.vtm import sample_hard_negatives, vtm_loss

__all__ = [
    "gather_with_grad", "mask_text_tokens", "mlm_loss", "mvm_loss", "pixel_targets", "random_patch_mask",
    "sample_hard_negatives", "vtc_loss", "vtm_loss",
]
